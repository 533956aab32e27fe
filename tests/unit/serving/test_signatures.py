"""The tabular input check: each wrong value is named by row and feature, and right rows pass."""

from __future__ import annotations

from typing import Any

import pytest

from openmaas.errors import ValidationFailed
from openmaas.serving.signatures import TabularCheck

CHECK = TabularCheck(
    [
        {"name": "age", "type": "numeric"},
        {"name": "income", "type": "numeric"},
        {"name": "plan", "type": "categorical"},
    ]
)


def test_rows_of_numbers_strings_and_nulls_pass() -> None:
    rows = [
        {"age": 30, "income": 1.5, "plan": "gold"},
        {"age": None, "income": 2, "plan": None},
        {"age": 1.0, "income": -3, "plan": 7},
    ]
    assert CHECK.check(rows) is rows


@pytest.mark.parametrize(
    ("row", "param", "words"),
    [
        ({"age": "30", "income": 1.0, "plan": "gold"}, "inputs.1.age", "number or null, not a string"),
        ({"age": 30, "income": True, "plan": "gold"}, "inputs.1.income", "number or null"),
        ({"age": 30, "income": [1], "plan": "gold"}, "inputs.1.income", "number or null"),
        ({"age": 30, "income": 1.0, "plan": {"x": 1}}, "inputs.1.plan", "string or null"),
        ({"age": 30, "income": 1.0}, "inputs.1.plan", "is required"),
        ({"age": 30, "income": 1.0, "plan": "a", "zip": 1}, "inputs.1.zip", "not a feature"),
    ],
)
def test_a_wrong_value_is_named_by_row_and_feature(row: dict[str, Any], param: str, words: str) -> None:
    good = {"age": 1, "income": 2.0, "plan": "basic"}
    with pytest.raises(ValidationFailed) as failed:
        CHECK.check([good, row])
    assert failed.value.param == param
    assert words in str(failed.value)
