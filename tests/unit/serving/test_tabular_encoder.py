"""The serving-time tabular encoder computes exactly what the fitted preprocessor computes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from openmaas.datasets.preprocessing.spec import TabularSpec
from openmaas.datasets.preprocessing.tabular import TabularPreprocessor
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
