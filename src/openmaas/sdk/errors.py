"""SDK exceptions, raised from the server's error JSON: one class per HTTP error status."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class APIConnectionError(Exception):
    """The server could not be reached."""


class APIError(Exception):
    status_code: int = 0

    def __init__(
        self, status_code: int, error: dict[str, Any], request_id: str | None, headers: httpx.Headers
    ):
        self.status_code = status_code
        self.message: str = str(error.get("message") or f"HTTP {status_code}")
        self.type: str | None = error.get("type")
        self.param: str | None = error.get("param")
        self.code: str | None = error.get("code")
        # Every problem of a refused file, each with its line (`{"code", "message", "line"}`).
        issues = error.get("issues")
        self.issues: list[dict[str, Any]] = issues if isinstance(issues, list) else []
        self.request_id = request_id
        self.headers = headers
        super().__init__(self.message)

    @property
    def retry_after(self) -> float | None:
        """The seconds the server asked the client to wait (`retry-after-ms`, or `Retry-After` as
        seconds or as a date), if it asked."""
        try:
            if (millis := self.headers.get("retry-after-ms")) is not None:
                return float(millis) / 1000
            if (value := self.headers.get("retry-after")) is None:
                return None
            try:
                return float(value)
            except ValueError:
                return parsedate_to_datetime(value).timestamp() - time.time()
        except (ValueError, TypeError, OverflowError):
            return None

    def __str__(self) -> str:
        where = f" (param: {self.param})" if self.param else ""
        return f"{self.status_code} {self.code or self.type}: {self.message}{where}"


class BadRequestError(APIError):
    pass


class AuthenticationError(APIError):
    pass


class InsufficientQuotaError(APIError):
    pass


class PermissionDeniedError(APIError):
    pass


class NotFoundError(APIError):
    pass


class ConflictError(APIError):
    pass


class PayloadTooLargeError(APIError):
    pass


class UnsupportedMediaTypeError(APIError):
    pass


class UnprocessableEntityError(APIError):
    pass


class RateLimitError(APIError):
    pass


class InternalServerError(APIError):
    pass


class ServiceUnavailableError(APIError):
    pass


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientQuotaError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: BadRequestError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_for(response: httpx.Response) -> APIError:
    try:
        payload = response.json()
        error = payload.get("error") if isinstance(payload, dict) else None
    except ValueError:
        error = None
    if not isinstance(error, dict):
        error = {"message": response.text[:500] or response.reason_phrase}
    kind = _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = InternalServerError if response.status_code >= 500 else APIError
    return kind(response.status_code, error, response.headers.get("x-request-id"), response.headers)
