"""The one mapping from any failure to `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from openmaas import errors

log = logging.getLogger("openmaas.api")

_HTTP_ERRORS: dict[int, type[errors.OpenMaaSError]] = {
    400: errors.InvalidRequest,
    401: errors.AuthenticationFailed,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
    422: errors.ValidationFailed,
}


# What SQLAlchemy raises when the database cannot be reached or used right now: refused or dropped
# connections, a server shutting down, a pool with no connection free in time, SQLite's "database
# is locked" or "disk I/O error". A retry later may well succeed: 503, never 500.
_DATABASE_DOWN = (sa.OperationalError, sa.InterfaceError, sa.TimeoutError, sa.DisconnectionError)
DATABASE_RETRY_AFTER_S = 2.0


def database_unavailable(exc: BaseException) -> errors.ServiceUnavailable | None:
    """The 503 for an error that says the database is unreachable; None for any other."""
    if not isinstance(exc, _DATABASE_DOWN) and not (
        isinstance(exc, sa.DBAPIError) and exc.connection_invalidated
    ):
        return None
    log.warning("database unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
    return errors.ServiceUnavailable(
        "The database is unavailable; retry shortly.",
        code="database_unavailable",
        retry_after=DATABASE_RETRY_AFTER_S,
    )


def error_response(error: errors.OpenMaaSError) -> Response:
    return Response(
        orjson.dumps(error.to_dict()),
        status_code=error.status,
        headers=error.headers,
        media_type="application/json",
    )


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = (
        [str(part) for part in loc[1:]]
        if loc and loc[0] in ("body", "query", "path", "header")
        else [str(part) for part in loc]
    )
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError, content_type: str) -> errors.OpenMaaSError:
    problems = list(exc.errors())
    if not problems:
        return errors.InvalidRequest("Invalid request.")
    first = problems[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return errors.InvalidRequest(f"Invalid JSON body: {first.get('msg')}.", code="invalid_json")
    if loc and loc[0] == "body" and content_type and "json" not in content_type:
        return errors.UnsupportedMediaType("Send the body as JSON with 'Content-Type: application/json'.")
    param = _param(loc)
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    code = "missing_field" if first.get("type") == "missing" else "invalid_value"
    return errors.ValidationFailed(message, param=param, code=code)


def _unreadable(cause: BaseException) -> str:
    if isinstance(cause, RecursionError):
        return "it nests too deeply"
    return str(cause)


def _allowed_methods(routes: list[BaseRoute], request: Request) -> str:
    """Every method some route serves at this path. FastAPI keeps one route per method, and
    Starlette's 405 names only the methods of the first route whose path matched."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


def install(app: FastAPI, routes: list[BaseRoute]) -> None:
    """Answer every failure in our error shape; `routes` are the app's own (for `Allow` on a 405)."""

    async def on_domain_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.OpenMaaSError)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        error = validation_error(exc, request.headers.get("content-type", ""))
        extra = getattr(request.scope.get("route"), "openapi_extra", None) or {}
        if extra.get("x-openai-errors") and error.status == 422:
            # OpenAI answers bad parameters with 400; its SDK raises BadRequestError for them.
            error = errors.InvalidRequest(error.message, param=error.param, code=error.code)
        return error_response(error)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = _HTTP_ERRORS.get(exc.status_code, errors.InternalError)
        if exc.status_code == 404:
            error: errors.OpenMaaSError = kind(
                f"No route {request.method} {request.url.path}.", code="unknown_route"
            )
        elif exc.status_code == 405:
            error = kind(f"Method {request.method} is not allowed on {request.url.path}.")
            error.headers["Allow"] = _allowed_methods(routes, request)
        elif exc.status_code == 400 and isinstance(exc.__cause__, (RecursionError, ValueError)):
            # FastAPI's answer to a body json.loads failed on for another reason than its syntax.
            message = f"Invalid JSON body: {_unreadable(exc.__cause__)}."
            error = errors.InvalidRequest(message, code="invalid_json")
        else:
            error = kind(str(exc.detail))
        error.headers.update({k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"})
        return error_response(error)

    async def on_database_down(_request: Request, exc: Exception) -> Response:
        unavailable = database_unavailable(exc)
        assert unavailable is not None  # installed for `_DATABASE_DOWN` only
        return error_response(unavailable)

    async def on_unexpected(_request: Request, _exc: Exception) -> Response:
        # FastAPI's outermost error middleware answers with this, then re-raises to the gateway,
        # which logs it once.
        return error_response(errors.InternalError("Internal server error."))

    app.add_exception_handler(Exception, on_unexpected)
    for kind in _DATABASE_DOWN:
        app.add_exception_handler(kind, on_database_down)
    app.add_exception_handler(errors.OpenMaaSError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
