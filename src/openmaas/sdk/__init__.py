"""The Python SDK: `Client` (sync) and `AsyncClient`, over httpx, with typed results and one
exception class per error type. It imports only `openmaas.schemas` and `openmaas.units` from the
rest of the package, so a client needs none of the server's dependencies (a test keeps it so)."""

from openmaas.sdk.client import AsyncClient, Client
from openmaas.sdk.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InsufficientQuotaError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "InsufficientQuotaError",
    "InternalServerError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
]
