"""Free-form request objects: their depth is measured without recursion, and bounded."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from openmaas.schemas.free_form import MAX_DEPTH, FreeForm, depth


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels - 1):
        value = [value]
    return {"a": value}


def test_depth_counts_objects_and_arrays() -> None:
    assert depth(1) == 0
    assert depth({}) == 1
    assert depth({"a": [1, {"b": [2]}], "c": 3}) == 4
    assert depth(_nested(MAX_DEPTH)) == MAX_DEPTH


def test_a_value_nested_past_python_s_recursion_limit_is_measured() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    assert depth(value) == MAX_DEPTH + 1  # it stops counting past the limit


class _Body(BaseModel):
    engine: FreeForm


def test_free_form_objects_are_bounded() -> None:
    assert _Body(engine=_nested(MAX_DEPTH)).engine == _nested(MAX_DEPTH)
    with pytest.raises(ValidationError) as refused:
        _Body(engine=_nested(MAX_DEPTH + 1))
    assert refused.value.errors()[0]["loc"] == ("engine",)
