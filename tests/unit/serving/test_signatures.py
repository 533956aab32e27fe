"""The tabular input check: each wrong value is named by row and feature, and right rows pass."""

from __future__ import annotations

from typing import Any

import pytest

from openmaas.errors import ValidationFailed
from openmaas.serving.signatures import MAX_NAMED, TabularCheck

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


# A row missing many features named only the first (issue 15, item 12): all are named, as a
# bounded list, and `param` stays the first missing one.
WIDE = TabularCheck([{"name": f"f{i:02d}", "type": "numeric"} for i in range(30)])


def test_every_missing_feature_is_named_up_to_a_bound() -> None:
    row = {"f00": 1.0, "f17": 2.0}
    with pytest.raises(ValidationFailed) as failed:
        WIDE.check([{f"f{i:02d}": 0.0 for i in range(30)}, row])
    missing = [f"f{i:02d}" for i in range(30) if i not in (0, 17)]
    assert failed.value.param == "inputs.1.f01"
    message = failed.value.message
    assert "28 features are missing" in message and "send null for an unknown value" in message
    assert ", ".join(missing[:MAX_NAMED]) in message and f"and {28 - MAX_NAMED} more" in message
    assert missing[MAX_NAMED] not in message


def test_two_missing_features_are_both_named() -> None:
    with pytest.raises(ValidationFailed) as failed:
        CHECK.check([{"income": 1.0}])
    assert failed.value.param == "inputs.0.age"
    assert "age, plan" in failed.value.message and "more" not in failed.value.message


def test_unknown_features_are_all_named_and_the_feature_list_is_bounded() -> None:
    row = {f"f{i:02d}": 0.0 for i in range(30)} | {"zip": 1, "colour": "red"}
    with pytest.raises(ValidationFailed) as failed:
        WIDE.check([row])
    assert failed.value.param == "inputs.0.colour"
    assert "colour, zip" in failed.value.message
    assert "f29" not in failed.value.message  # the model's 30 features, bounded too
