"""`openmaas worker` processes run the billing scheduler too, so a cluster bills with no API server
up: two workers on one database sample yesterday's storage and close last month once, between
them, with no chore failing on the other's work."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from openmaas.billing.scheduler import CHORE
from openmaas.billing.tables import BillingChore, Invoice
from openmaas.bootstrap import Platform
from openmaas.metering.sources import storage_event_id, yesterday
from openmaas.metering.tables import UsageRecord
from openmaas.pricing.periods import next_period, period_of
from tests.integration.billing.helpers import make_org
from tests.support.clock import FakeClock
from tests.support.platforms import make_platform
from tests.support.workers import start_worker

_GB = 1_000_000_000


@pytest.fixture
def long_ago(tmp_path: Path, database_url: str) -> Iterator[Platform]:
    """A platform whose clock stands 40 days back, to create an organisation with a month behind it."""
    platform = make_platform(
        tmp_path / "home", database_url, clock=FakeClock(datetime.now(UTC) - timedelta(days=40))
    )
    yield platform
    platform.close()


def _start_worker(platform: Platform, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        platform.settings,
        log,
        {
            "OPENMAAS_BILLING_SCHEDULER_INTERVAL_S": "0.5",
            "OPENMAAS_BILLING_FINALIZE_GRACE_S": "0",
            "OPENMAAS_JOB_POLL_S": "0.2",
        },
    )


def test_two_workers_run_the_billing_chores_once_between_them(long_ago: Platform, tmp_path: Path) -> None:
    platform = long_ago
    org = make_org(platform, "acme")
    stored = platform.store.path(f"datasets/{org}/ds_1/data.csv")
    stored.parent.mkdir(parents=True)
    with stored.open("wb") as handle:
        handle.truncate(3 * _GB)  # sparse: its size without writing gigabytes
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [_start_worker(platform, log) for log in logs]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with platform.db.read_session() as session:
                sampled = list(session.scalars(select(UsageRecord.event_id).where(UsageRecord.org_id == org)))
                closed = list(session.scalars(select(Invoice.period).where(Invoice.org_id == org)))
            if sampled and closed:
                break
            assert all(w.poll() is None for w in workers), [log.read_text() for log in logs]
            time.sleep(0.2)
        time.sleep(1.5)  # a few more slots: nothing runs twice
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=60) for worker in workers]
    text = [log.read_text() for log in logs]
    assert codes == [0, 0], text
    now = datetime.now(UTC)
    with platform.db.read_session() as session:
        sampled = list(session.scalars(select(UsageRecord.event_id).where(UsageRecord.org_id == org)))
        periods = sorted(session.scalars(select(Invoice.period).where(Invoice.org_id == org)))
        chore = session.get(BillingChore, CHORE)
    assert sampled == [storage_event_id(org, yesterday(now, "UTC"))]
    ended, current = [period_of(now - timedelta(days=40), "UTC")], period_of(now, "UTC")
    while next_period(ended[-1]) < current:
        ended.append(next_period(ended[-1]))
    assert periods == ended
    assert chore is not None and chore.ran_at is not None
    # The slot that did the work was run by one process: one report of it, and no chore failing
    # on work the other had done.
    reports = [line for log in text for line in log.splitlines() if "storage samples" in line]
    assert len(reports) == 1, text
    assert not any("billing chores failed" in log for log in text), text
