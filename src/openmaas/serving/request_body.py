"""The bodies of the hand-parsed inference use-cases (predict, explain): the JSON object with its
allowed fields, and the seconds the caller will wait (the body's `timeout` or the
`X-Request-Timeout` header). Every problem raises a 4xx naming the field."""

from __future__ import annotations

from typing import Any

import orjson

from openmaas import errors
from openmaas.schemas.serving import MAX_TIMEOUT_S


def json_body(raw: bytes, fields: frozenset[str]) -> dict[str, Any]:
    """The body as a dict holding `inputs` and only `fields`; a 4xx naming the problem otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise errors.InvalidRequest("The body is not valid JSON.", code="invalid_json") from None
    if type(body) is not dict:
        raise errors.ValidationFailed('The body must be an object: {"inputs": [...]}.', param="body")
    if "inputs" not in body:
        raise errors.ValidationFailed("inputs is required.", param="inputs")
    if len(body) > 1 and not body.keys() <= fields:
        unknown = sorted(set(body) - fields)[0]
        raise errors.ValidationFailed(f"Unknown field {unknown!r}.", param=unknown)
    return body


def request_timeout(header: str | None, body: dict[str, Any], default: float) -> float:
    """Seconds the caller will wait: the body's `timeout`, else the header, else `default`."""
    value: Any = body.get("timeout", header)
    if value is None:
        return default
    param = "timeout" if "timeout" in body else "X-Request-Timeout"
    try:
        # The header is text; the body's field is a JSON number, as the document says.
        seconds = float(value) if param == "X-Request-Timeout" or type(value) in (int, float) else -1.0
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 < seconds <= MAX_TIMEOUT_S:
        raise errors.ValidationFailed(
            f"{param} must be a number of seconds in (0, {MAX_TIMEOUT_S:g}].", param=param
        )
    return seconds
