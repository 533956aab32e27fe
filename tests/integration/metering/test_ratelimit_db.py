"""Cluster mode's rate limiter: two API servers sharing the database draw from one bucket."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from openmaas.bootstrap import Platform
from openmaas.metering.ratelimit import Limits
from openmaas.metering.ratelimit_db import DatabaseRateLimiter
from openmaas.metering.tables import RateLimitBucket
from tests.support.clock import FakeClock
from tests.support.platforms import make_platform


def _level(platform: Platform, subject: str, kind: str) -> float:
    with platform.db.read_session() as session:
        row = session.scalar(
            select(RateLimitBucket).where(RateLimitBucket.subject == subject, RateLimitBucket.kind == kind)
        )
    assert row is not None
    return row.level_milli / 1000


def test_two_servers_share_one_bucket_per_subject(platform: Platform) -> None:
    clock = FakeClock()
    servers = [DatabaseRateLimiter(platform.db, clock), DatabaseRateLimiter(platform.db, clock)]
    subjects = [("org_shared", Limits(requests_per_minute=30, tokens_per_minute=1_000))]

    def call(i: int) -> bool:
        return servers[i % 2].acquire(subjects, 10).allowed

    with ThreadPoolExecutor(max_workers=8) as pool:
        burst = list(pool.map(call, range(80))).count(True)
    # Not 30 per server; maybe fewer than 30, while one server's slice waits unused.
    assert 0 < burst <= 30
    for server in servers:
        server.give_back()
    assert _level(platform, "org_shared", "requests") == 30 - burst
    rest = [servers[0].acquire(subjects, 10).allowed for _ in range(40)]
    assert burst + rest.count(True) == 30  # with the slices back, exactly the bucket's 30
    refused = servers[0].acquire(subjects, 10)
    assert not refused.allowed and refused.limit_type == "requests"
    assert refused.requests is not None and refused.requests.remaining == 0
    assert refused.tokens is not None and refused.tokens.remaining == 700
    clock.advance(refused.retry_after_s)
    assert servers[1].acquire(subjects, 10).allowed  # honest on the other server too
    servers[1].refund(subjects, 10)  # it used none of its tokens: back into its slice, no I/O
    for server in servers:
        server.give_back()
    refilled = refused.retry_after_s * 1_000 / 60  # tokens refill while the client waits
    assert _level(platform, "org_shared", "tokens") == pytest.approx(700 + refilled, abs=0.002)


def test_requests_within_a_slice_need_no_database(platform: Platform) -> None:
    clock = FakeClock()
    limiter = DatabaseRateLimiter(platform.db, clock)
    subjects = [("org_a", Limits(requests_per_minute=800, tokens_per_minute=None))]
    assert limiter.acquire_nowait(subjects, 0) is None  # no slice yet
    first = limiter.acquire(subjects, 0)  # takes a slice: an eighth of 800
    assert first.allowed and _level(platform, "org_a", "requests") == 700
    served = 1
    while (decision := limiter.acquire_nowait(subjects, 0)) is not None:
        assert decision.allowed
        served += 1
    assert served == 100 and _level(platform, "org_a", "requests") == 700
    limiter.close()


def test_slices_of_huge_limits_go_back_whole(platform: Platform) -> None:
    limiter = DatabaseRateLimiter(platform.db, FakeClock())
    subjects = [("org_big", Limits(requests_per_minute=10**9, tokens_per_minute=10**12))]
    assert limiter.acquire(subjects, 100).allowed
    limiter.refund(subjects, 100)
    limiter.close()
    assert _level(platform, "org_big", "requests") == 10**9 - 1
    assert _level(platform, "org_big", "tokens") == 10**12


def test_the_setting_selects_it(tmp_path: Path, database_url: str) -> None:
    platform = make_platform(tmp_path / "home", database_url, rate_limiter="database")
    try:
        assert isinstance(platform.gate._limiter, DatabaseRateLimiter)
    finally:
        platform.close()
