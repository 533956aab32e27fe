"""The domain error tree and its one mapping to HTTP status and the error JSON.

Services raise these; `api/errors.py` turns any of them into
`{"error": {"message", "type", "param", "code"}}` with `status`. Nothing here knows about HTTP
frameworks: the status is plain data so services, workers and the engine can share one tree.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OpenMaaSError(Exception):
    """Base of every error a user can see. `param` names the offending field, if any."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its class, message and attributes, whatever its `__init__` takes: errors cross
        from Ray replicas to API servers this way (`InvalidRow`'s positional fields broke the
        default, which calls `__init__` with the message alone)."""
        return (_rebuilt, (type(self), self.args, self.__dict__))


class InvalidRequest(OpenMaaSError):
    """400: the request cannot be understood (bad JSON, bad parameter value)."""

    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(OpenMaaSError):
    """401: no key, a malformed key, an unknown, expired or revoked key."""

    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(OpenMaaSError):
    """403: the key is valid but lacks the scope the call needs."""

    status = 403
    type = "permission_error"
    default_code = "insufficient_scope"


class NotFound(OpenMaaSError):
    """404: no such thing, or it belongs to another organisation (we never say which)."""

    status = 404
    type = "not_found_error"
    default_code = "not_found"


class MethodNotAllowed(OpenMaaSError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class Conflict(OpenMaaSError):
    """409: the request clashes with the current state (a duplicate name, a reused idempotency key)."""

    status = 409
    type = "conflict_error"
    default_code = "conflict"


class PayloadTooLarge(OpenMaaSError):
    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class UnsupportedMediaType(OpenMaaSError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class ValidationFailed(OpenMaaSError):
    """422: well-formed JSON whose fields have the wrong type or value."""

    status = 422
    type = "invalid_request_error"
    default_code = "invalid_value"


class InvalidFile(InvalidRequest):
    """400: an uploaded file's content breaks its format; `issues` lists every problem found, each
    with its line (`{"code", "message", "line"}`), under `error.issues`."""

    default_code = "invalid_file"

    def __init__(self, message: str, *, issues: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.issues = issues

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["error"]["issues"] = self.issues
        return body


class _RetryLater(OpenMaaSError):
    """An error the client should retry after `retry_after` seconds (sent as `Retry-After`)."""

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        # Retry-After takes whole seconds; round up so that waiting that long is enough.
        self.headers.setdefault("Retry-After", str(max(1, int(-(-retry_after // 1)))))


class RateLimited(_RetryLater):
    """429: too many requests or tokens; `type` is `requests` or `tokens` as OpenAI does."""

    status = 429
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit_type: str = "requests", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.limit_type = limit_type

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["error"]["type"] = self.limit_type
        return body


class InsufficientQuota(OpenMaaSError):
    """402: out of prepaid credit or over a spending cap."""

    status = 402
    type = "insufficient_quota"
    default_code = "insufficient_quota"


class ServiceUnavailable(_RetryLater):
    """503: a bounded queue is full or a dependency is down; retry later."""

    status = 503
    type = "server_error"
    default_code = "overloaded"


class InsufficientStorage(OpenMaaSError):
    """507: the artifact store has no space left for an upload; nothing of it was kept."""

    status = 507
    type = "server_error"
    default_code = "insufficient_storage"


class DeadlineExceeded(OpenMaaSError):
    status = 504
    type = "server_error"
    default_code = "deadline_exceeded"


class InternalError(OpenMaaSError):
    status = 500
    type = "server_error"
    default_code = "internal_error"


def _rebuilt(cls: type[OpenMaaSError], args: tuple[Any, ...], attributes: dict[str, Any]) -> OpenMaaSError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(attributes)
    return error
