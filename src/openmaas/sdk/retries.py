"""When the SDK sends a request again, and how long it waits first: the policy of OpenAI's SDK,
run by tenacity.

After a connection error, a 408, a 429 or a 5xx a request goes again, at most `max_retries` times
(2 unless the client says otherwise), after the wait the answer's `Retry-After` (or
`retry-after-ms`) asks for when that is within a minute, else after 0.5 s doubling up to 8 s,
less up to 25% jitter so that many clients do not come back at once.

Only what cannot do a thing twice goes again blindly. Every request goes again when it was refused
before anything was done: the connection was never made, or the answer was 429 or 503 (the server
refuses overload with these, before doing anything). After other failures, where the request may
have been done and its answer lost, only a GET, HEAD, OPTIONS, PUT or DELETE goes again, or a
POST carrying an Idempotency-Key (the server answers a repeat with what the first one created;
the SDK's creates make one of their own, see `calls.creating`). A predict, say, that timed out
while reading its answer is not sent again: it may have been served and billed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from openmaas.sdk.calls import Call, Download
from openmaas.sdk.errors import APIError

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_POINTLESS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)  # the same request fails the same way
_REFUSED = frozenset({429, 503})
_LONGEST_RETRY_AFTER_S = 60.0

Attempted = Call[Any] | Download


def may_retry(step: Attempted, error: BaseException) -> bool:
    """May `step` go again after `error`?"""
    if isinstance(error, APIError):
        if error.status_code in _REFUSED:
            return True
        return (error.status_code == 408 or error.status_code >= 500) and _repeatable(step)
    if isinstance(error, _POINTLESS):
        return False
    if isinstance(error, _NEVER_SENT):
        return True
    return isinstance(error, httpx.TransportError) and _repeatable(step)


def _repeatable(step: Attempted) -> bool:
    """Is doing `step` twice the same as doing it once?"""
    if isinstance(step, Download):
        return True
    return step.method in _SAFE_METHODS or step.idempotency_key is not None


@dataclass(frozen=True)
class Retries:
    """At most `max_retries` more attempts, the backoff starting at `initial_delay` seconds and
    doubling up to `max_delay`."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")

    def blocking(self, step: Attempted, sleep: Any) -> Retrying:
        """A tenacity loop for `step` that waits with `sleep(seconds)`."""
        return Retrying(sleep=sleep, **self._policy(step))

    def awaited(self, step: Attempted, sleep: Any) -> AsyncRetrying:
        """The same, for asyncio (`sleep` is awaited)."""
        return AsyncRetrying(sleep=sleep, **self._policy(step))

    def _policy(self, step: Attempted) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(self.max_retries + 1),
            "retry": retry_if_exception(partial(may_retry, step)),
            "wait": self.wait,
            "reraise": True,  # the last failure itself, not tenacity's RetryError
        }

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: what the answer asked for, else the backoff."""
        error = state.outcome.exception() if state.outcome is not None else None
        asked = error.retry_after if isinstance(error, APIError) else None
        if asked is not None and 0 < asked <= _LONGEST_RETRY_AFTER_S:
            return asked
        ceiling = min(self.initial_delay * 2 ** (state.attempt_number - 1), self.max_delay)
        return ceiling * (1 - 0.25 * random.random())
