"""Token-bucket rate limits: bursts, honest retry-after, tokens, per-key and per-org subjects."""

from __future__ import annotations

from openmaas.metering.ratelimit import InMemoryRateLimiter, Limits, headers_for
from tests.support.clock import FakeClock


def test_a_burst_of_a_minutes_allowance_then_an_honest_retry_after() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock)
    subjects = [("org_a", Limits(requests_per_minute=60))]
    assert all(limiter.acquire(subjects, 0).allowed for _ in range(60))
    refused = limiter.acquire(subjects, 0)
    assert not refused.allowed and refused.limit_type == "requests"
    assert abs(refused.retry_after_s - 1.0) < 1e-9  # one request refills every second
    clock.advance(refused.retry_after_s * 0.9)
    assert not limiter.acquire(subjects, 0).allowed
    clock.advance(refused.retry_after_s * 0.1 + 1e-9)
    assert limiter.acquire(subjects, 0).allowed


def test_tokens_are_limited_and_refunded_when_fewer_were_used() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock)
    subjects = [("org_a", Limits(tokens_per_minute=1_000))]
    assert limiter.acquire(subjects, 800).allowed
    refused = limiter.acquire(subjects, 300)
    assert not refused.allowed and refused.limit_type == "tokens"
    assert abs(refused.retry_after_s - 100 / (1_000 / 60)) < 1e-9
    limiter.refund(subjects, 500)  # the first request used 300 of its 800
    assert limiter.acquire(subjects, 300).allowed


def test_the_key_and_the_org_must_both_allow_and_nothing_is_spent_on_refusal() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock)
    key_a = [("org_a", Limits(requests_per_minute=3)), ("key_a", Limits(requests_per_minute=2))]
    key_b = [("org_a", Limits(requests_per_minute=3))]
    assert limiter.acquire(key_a, 0).allowed and limiter.acquire(key_a, 0).allowed
    assert not limiter.acquire(key_a, 0).allowed  # the key's limit
    assert limiter.acquire(key_b, 0).allowed  # the org still had one, not spent by the refusal
    decision = limiter.acquire(key_b, 0)
    assert not decision.allowed
    assert headers_for(decision) == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
    }
