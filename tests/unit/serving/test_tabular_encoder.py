"""The serving-time tabular encoder computes exactly what the fitted preprocessor computes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from openmaas.datasets.preprocessing.spec import TabularSpec
from openmaas.datasets.preprocessing.tabular import TabularPreprocessor
from openmaas.serving.signatures import InvalidRow, check_finite
from openmaas.serving.tabular_encoder import TabularEncoder


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.uniform(18, 80, 50),
            "plan": rng.choice(["basic", "pro", "team", "free", "gold"], 50),
            "visits": rng.integers(0, 20, 50),
        }
    )


ROWS: list[dict[str, Any]] = [
    {"age": 30.5, "plan": "pro", "visits": 3},
    {"age": None, "plan": None, "visits": 0},
    {"age": 99, "plan": "never-seen", "visits": None},
]


@pytest.mark.parametrize("encode", ["onehot", "ordinal"])
@pytest.mark.parametrize("max_categories", [10, 3])
def test_encoder_matches_the_preprocessor(encode: str, max_categories: int) -> None:
    spec = TabularSpec(encode=encode, max_categories=max_categories)  # type: ignore[arg-type]
    preprocessor = TabularPreprocessor.fit(_frame(), spec)
    expected = preprocessor.transform(ROWS)
    got = TabularEncoder(preprocessor).encode(ROWS)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("value", [1e200, -1e308, 1e308, 3.5e38 * 20])
def test_a_number_scaled_past_float32_is_refused_naming_row_and_feature(
    value: float,
) -> None:
    encoder = TabularEncoder(TabularPreprocessor.fit(_frame(), TabularSpec()))
    with pytest.raises(InvalidRow) as refused:
        encoder.encode([ROWS[0], ROWS[1], {**ROWS[0], "visits": value}])
    assert (refused.value.param, refused.value.code) == ("inputs.2.visits", "invalid_input")
    assert "send a number from" in refused.value.message
    assert refused.value.shifted(30).param == "inputs.32.visits"
    edge = encoder.encode([{**ROWS[0], "visits": 3e38}])  # scaled, still within float32
    assert bool(torch.isfinite(edge).all())


def test_non_finite_outputs_name_their_first_row() -> None:
    check_finite(torch.ones(4, 3))
    outputs = torch.ones(4, 3)
    outputs[3, 0], outputs[1, 2] = float("nan"), float("-inf")
    with pytest.raises(InvalidRow) as refused:
        check_finite(outputs)
    assert (refused.value.param, refused.value.code) == ("inputs.1", "non_finite_output")
