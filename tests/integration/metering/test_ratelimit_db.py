"""Cluster mode's rate limiter: two API servers sharing the database draw from one bucket."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openmaas.bootstrap import Platform
from openmaas.metering.ratelimit import Limits
from openmaas.metering.ratelimit_db import DatabaseRateLimiter
from tests.support.clock import FakeClock
from tests.support.platforms import make_platform


def test_two_servers_share_one_bucket_per_subject(platform: Platform) -> None:
    clock = FakeClock()
    servers = [DatabaseRateLimiter(platform.db, clock), DatabaseRateLimiter(platform.db, clock)]
    subjects = [("org_shared", Limits(requests_per_minute=30, tokens_per_minute=1_000))]

    def call(i: int) -> bool:
        return servers[i % 2].acquire(subjects, 10).allowed

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(call, range(80)))
    assert outcomes.count(True) == 30  # not 30 per server
    refused = servers[0].acquire(subjects, 10)
    assert not refused.allowed and refused.limit_type == "requests"
    assert refused.requests is not None and refused.requests.remaining == 0
    assert refused.tokens is not None and refused.tokens.remaining == 700
    clock.advance(refused.retry_after_s)
    assert servers[1].acquire(subjects, 10).allowed
    servers[1].refund(subjects, 500)
    servers[1].flush()  # refunds are written behind the request, within `flush_s`
    assert servers[0].acquire(subjects, 0).tokens.remaining == 1_000  # type: ignore[union-attr]


def test_the_setting_selects_it(tmp_path: Path, database_url: str) -> None:
    platform = make_platform(tmp_path / "home", database_url, rate_limiter="database")
    try:
        assert isinstance(platform.gate._limiter, DatabaseRateLimiter)
    finally:
        platform.close()
