"""The error answers a route documents in the OpenAPI document, in our error shape (`ErrorBody`).

Each router names the ones every route of it can give (`KEYED`: a route that takes an API key),
and each route adds its own: `responses=errors(404, 422)`. The status codes and their meaning
are those `api/errors.py` maps the domain errors to; the fuzzing suite
(tests/integration/test_openapi_fuzz.py) fails on any answer a route does not document.
"""

from __future__ import annotations

from typing import Any

from openmaas.schemas.errors import ErrorBody

_MEANINGS = {
    400: "The request cannot be read: malformed JSON or headers, or a value the operation refuses",
    401: "No API key, or a malformed, unknown, expired or revoked one",
    402: "Out of prepaid credit, or over a spending cap",
    403: "The key lacks the scope this operation needs, or is of the wrong kind (operator or tenant)",
    404: "No such thing in the caller's organisation",
    409: "The request clashes with the current state (a taken name, a thing in use, a reused "
    "Idempotency-Key with another body)",
    413: "The body is over the size limit",
    415: "The body is not of the documented media type",
    422: "A field, parameter or header has the wrong type or value; `param` names it",
    429: "Too many requests or tokens; retry after `Retry-After` seconds",
    503: "Overloaded, or a dependency (the database, a model replica) is unavailable; retry after "
    "`Retry-After` seconds",
    507: "The server's artifact storage is full: nothing of the upload was kept",
    504: "The request's deadline (`X-Request-Timeout`) passed before it was served",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A `responses=` map documenting `statuses` as our error body."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {"model": ErrorBody, "description": _MEANINGS[status]}
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        documented[status] = response
    return documented


# Every route that takes an API key: none or a bad one (401), the wrong scope or kind of key (403),
# a NUL anywhere in the URL (422, from the gateway), and the database behind the key lookup being
# unreachable (503).
KEYED = errors(401, 403, 422, 503)
# A JSON body: unreadable (400), over the limit (413), not JSON (415), a bad field (422).
JSON_BODY = (400, 413, 415, 422)
# An inference call: besides a bad body, no such deployment or model (404), a request id already in
# flight (409), out of credit (402), rate limited (429), past its deadline (504).
INFERENCE = (*JSON_BODY, 402, 404, 409, 429, 504)
