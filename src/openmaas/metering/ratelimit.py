"""Rate limits: requests per minute and tokens per minute, per API key and per organisation.

Each limit is a token bucket holding at most `limit` units and refilling at `limit / 60` per
second, so a client may burst up to a minute's allowance and then runs at the steady rate. A
refused request's `retry_after` is exactly when the bucket will hold enough again, so waiting that
long succeeds (unless someone else spends it first). `InMemoryRateLimiter` serves one process (the
embedded mode); a cluster needs a limiter whose buckets live in shared state, behind the same
`RateLimiter` protocol (ratelimit_db.py).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Protocol

from openmaas.clock import Clock


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


# Not frozen: a frozen dataclass's __init__ costs ~2 µs, paid on every request; treat as immutable.
@dataclass(slots=True)
class Bucket:
    """A bucket's state after a decision, for the `x-ratelimit-*` headers."""

    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again


# Not frozen: a frozen dataclass's __init__ costs ~2 µs, paid on every request; treat as immutable.
@dataclass(slots=True)
class Decision:
    allowed: bool
    requests: Bucket | None
    tokens: Bucket | None
    limit_type: str = "requests"  # which limit refused, when not allowed
    retry_after_s: float = 0.0


class RateLimiter(Protocol):
    def acquire(self, subjects: list[tuple[str, Limits]], tokens: int) -> Decision:
        """Take one request and `tokens` from every subject's buckets, all or nothing."""
        ...

    def acquire_nowait(self, subjects: list[tuple[str, Limits]], tokens: int) -> Decision | None:
        """`acquire` from memory (safe on the event loop); None, with nothing taken, when the
        decision needs I/O."""
        ...

    def refund(self, subjects: list[tuple[str, Limits]], tokens: int) -> None:
        """Give tokens back (a request used fewer than it reserved); negative takes more."""
        ...

    def close(self) -> None:
        """Write what is still pending (the shared limiter's refunds)."""
        ...


class TokenBucket:
    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self.level = float(capacity)
        self.rate = capacity / 60.0
        self.updated = now

    def refill(self, now: float, capacity: int) -> None:
        if capacity != self.capacity:  # the limit changed: keep the spent part
            self.level = min(float(capacity), self.level + capacity - self.capacity)
            self.capacity, self.rate = capacity, capacity / 60.0
        self.level = min(float(self.capacity), self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        needed = min(amount, float(self.capacity)) - self.level
        return 0.0 if needed <= 0 else needed / self.rate

    def state(self) -> Bucket:
        return Bucket(self.capacity, max(0, math.floor(self.level)), (self.capacity - self.level) / self.rate)


class InMemoryRateLimiter:
    def __init__(self, clock: Clock, *, max_subjects: int = 100_000) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()
        self._max_subjects = max_subjects

    def acquire(self, subjects: list[tuple[str, Limits]], tokens: int) -> Decision:
        with self._lock:
            now = self._clock.monotonic()
            return take(self._buckets_for(subjects, now), tokens)

    def acquire_nowait(self, subjects: list[tuple[str, Limits]], tokens: int) -> Decision:
        return self.acquire(subjects, tokens)

    def refund(self, subjects: list[tuple[str, Limits]], tokens: int) -> None:
        if not tokens:
            return
        with self._lock:
            now = self._clock.monotonic()
            for kind, bucket in self._buckets_for(subjects, now):
                if kind == "tokens":
                    bucket.level = min(float(bucket.capacity), bucket.level + tokens)

    def close(self) -> None:
        pass

    def _buckets_for(self, subjects: list[tuple[str, Limits]], now: float) -> list[tuple[str, TokenBucket]]:
        pairs = []
        for subject, limits in subjects:
            for kind, limit in (
                ("requests", limits.requests_per_minute),
                ("tokens", limits.tokens_per_minute),
            ):
                if limit is None:
                    continue
                bucket = self._buckets.get((subject, kind))
                if bucket is None:
                    if len(self._buckets) >= self._max_subjects:
                        self._evict_full(now)
                    bucket = self._buckets[(subject, kind)] = TokenBucket(limit, now)
                bucket.refill(now, limit)
                pairs.append((kind, bucket))
        return pairs

    def _evict_full(self, now: float) -> None:
        # A bucket that has refilled completely carries no state: dropping it changes nothing.
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now, bucket.capacity)
            if bucket.level >= bucket.capacity:
                del self._buckets[key]


def take(pairs: list[tuple[str, TokenBucket]], tokens: int) -> Decision:
    """One request and `tokens` from every bucket, or from none (then: which refused, and when)."""
    for kind, bucket in pairs:
        wait = bucket.wait_for(1 if kind == "requests" else tokens)
        if wait > 0:
            return decision_of(pairs, allowed=False, limit_type=kind, retry_after_s=wait)
    for kind, bucket in pairs:
        bucket.level -= min(1 if kind == "requests" else tokens, bucket.capacity)
    return decision_of(pairs, allowed=True)


def decision_of(
    pairs: list[tuple[str, TokenBucket]],
    *,
    allowed: bool,
    limit_type: str = "requests",
    retry_after_s: float = 0.0,
) -> Decision:
    tightest: dict[str, Bucket] = {}
    for kind, bucket in pairs:
        state = bucket.state()
        if kind not in tightest or state.remaining < tightest[kind].remaining:
            tightest[kind] = state
    return Decision(allowed, tightest.get("requests"), tightest.get("tokens"), limit_type, retry_after_s)


def headers_for(decision: Decision) -> dict[str, str]:
    """The `x-ratelimit-*` headers OpenAI's clients read."""
    headers: dict[str, str] = {}
    for kind, bucket in (("requests", decision.requests), ("tokens", decision.tokens)):
        if bucket is None:
            continue
        headers[f"x-ratelimit-limit-{kind}"] = str(bucket.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining)
        headers[f"x-ratelimit-reset-{kind}"] = _duration(bucket.reset_s)
    return headers


def _duration(seconds: float) -> str:
    """OpenAI's style: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 10) / 10:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"
