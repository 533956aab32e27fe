"""JSON's own scalar types for request fields, as the OpenAPI document states them.

Pydantic's lax mode would also take `"5"` or `true` for a number and `0` or `"yes"` for a boolean;
the document (and OpenAI, for its routes) refuse those. An integer may still come as `3.0`, which
JSON Schema counts as an integer."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Strict


def _integer(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise ValueError("expected an integer")
    return value


Integer = Annotated[int, BeforeValidator(_integer)]
Number = Annotated[float, Strict()]
Boolean = Annotated[bool, Strict()]
# For an optional integer with bounds: `Annotated[int, Field(ge=1), JSON_INTEGER] | None` (the
# bounds before the check, or pydantic leaves them out of the field's JSON schema).
JSON_INTEGER = BeforeValidator(_integer)
