"""Free-form JSON objects in requests (a deployment's engine settings, a training job's
hyperparameters and preprocessing) and in uploads (an imported model's config.json): how deep they
may nest.

They are stored as JSON and served back, and pydantic writes at most 255 levels: a deeper object
passed validation and then failed to be written (a 500). Real settings nest two or three levels.
What the values mean is checked where they are used, naming the setting.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

MAX_DEPTH = 32


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How many levels of objects and arrays `value` (parsed JSON) nests, counted up to `limit + 1`
    (iteratively: however deep it goes, this never recurses)."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            break
        pending.extend((child, level + 1) for child in children)
    return deepest


def check_free_form(value: dict[str, Any]) -> dict[str, Any]:
    if depth(value) > MAX_DEPTH:
        raise ValueError(f"must not nest deeper than {MAX_DEPTH} levels")
    return value


FreeForm = Annotated[dict[str, Any], AfterValidator(check_free_form)]
