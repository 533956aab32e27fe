"""The billing scheduler: month-end invoices in each organisation's own time zone, the daily storage
sample (written before its month is closed), nothing more when run again, and one run per slot
across several servers sharing a database — all on a moved clock, without sleeping."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from openmaas.billing.scheduler import CHORE, BillingScheduler, claim, slot_of
from openmaas.billing.tables import Invoice
from openmaas.metering.tables import UsageRecord
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_org, make_pricebook, meter
from tests.support.platforms import make_platform

_GB = 1_000_000_000


def _store_bytes(clocked: Clocked, org_id: str, nbytes: int) -> None:
    path = clocked.platform.store.path(f"datasets/{org_id}/ds_1/data.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.truncate(nbytes)  # sparse: its size without writing gigabytes


def _invoices(clocked: Clocked) -> list[tuple[str, str]]:
    with clocked.platform.db.read_session() as session:
        return sorted((row.org_id, row.period) for row in session.scalars(select(Invoice)))


def _storage(clocked: Clocked) -> list[tuple[str, str, int]]:
    with clocked.platform.db.read_session() as session:
        rows = session.scalars(
            select(UsageRecord).where(UsageRecord.qty_storage_gb_month_micros.is_not(None))
        )
        return sorted(
            (row.org_id, row.event_id.rsplit(":", 1)[1], row.qty_storage_gb_month_micros or 0) for row in rows
        )


def test_months_close_in_each_zone_after_their_storage_sample_and_only_once(clocked: Clocked) -> None:
    platform, scheduler = clocked.platform, clocked.platform.billing_scheduler
    make_pricebook(
        platform,
        [{"unit": "requests", "price": "1.00"}, {"unit": "storage_gb_month_micros", "price": "3.00"}],
    )
    london, kiritimati = make_org(platform, "ldn"), make_org(platform, "kir", timezone="Pacific/Kiritimati")
    _store_bytes(clocked, kiritimati, 3 * _GB)  # November has 30 days: 0.1 GB-month a day
    for org in (london, kiritimati):
        meter(platform, f"req-{org}", org, datetime(2026, 11, 25, tzinfo=UTC), {"requests": 2})

    # 10:06 UTC on 30 November is 00:06 on 1 December at UTC+14: only Kiritimati's month is over.
    clocked.move_to(datetime(2026, 11, 30, 10, 6, tzinfo=UTC))
    first = scheduler.run_due()
    assert first.claimed and len(first.finalized) == 1
    assert first.sampled == [f"storage:{kiritimati}:2026-11-30"]  # London stores nothing
    assert _invoices(clocked) == [(kiritimati, "2026-11")]
    assert _storage(clocked) == [(kiritimati, "2026-11-30", 100_000)]
    with platform.db.read_session() as session:
        document = session.scalars(select(Invoice)).one().document["invoice"]
    # 2 requests + one sampled day (the 30th; the org was created on the 20th, sampled from now on)
    assert document["subtotal"] == "2.30"

    again = scheduler.run_due()  # the same slot: already run
    assert (again.claimed, again.sampled, again.finalized) == (False, [], [])
    clocked.move_to(datetime(2026, 11, 30, 10, 12, tzinfo=UTC))
    later = scheduler.run_due()  # a new slot: runs, but everything is done
    assert (later.claimed, later.sampled, later.finalized) == (True, [], [])

    # Before the grace after London's month end: still open; after it: closed.
    clocked.move_to(datetime(2026, 12, 1, 0, 2, tzinfo=UTC))
    assert scheduler.run_due().finalized == []
    clocked.move_to(datetime(2026, 12, 1, 0, 6, tzinfo=UTC))
    assert len(scheduler.run_due().finalized) == 1
    assert _invoices(clocked) == sorted([(kiritimati, "2026-11"), (london, "2026-11")])
    # 14:06 on 1 December in Kiritimati: its yesterday is still the 30th, sampled once.
    assert _storage(clocked) == [(kiritimati, "2026-11-30", 100_000)]
    clocked.move_to(datetime(2026, 12, 1, 10, 6, tzinfo=UTC))
    assert scheduler.run_due().sampled == [f"storage:{kiritimati}:2026-12-01"]
    assert _storage(clocked)[-1] == (kiritimati, "2026-12-01", 96_774)  # 3 GB / 31 days


def test_a_slot_claimed_by_a_server_that_died_is_caught_up_by_the_next(clocked: Clocked) -> None:
    platform, scheduler = clocked.platform, clocked.platform.billing_scheduler
    org = make_org(platform, "acme")
    _store_bytes(clocked, org, _GB)
    clocked.move_to(datetime(2026, 12, 1, 0, 30, tzinfo=UTC))
    with platform.db.session() as session:  # another server claims the slot, then crashes
        assert claim(session, CHORE, slot_of(platform.clock.now(), 300), platform.clock.now())
    assert scheduler.run_due().claimed is False
    assert _invoices(clocked) == [] and _storage(clocked) == []
    clocked.move_to(datetime(2026, 12, 1, 0, 35, tzinfo=UTC))
    run = scheduler.run_due()
    assert run.claimed and len(run.finalized) == 1 and len(run.sampled) == 1
    assert _storage(clocked) == [(org, "2026-11-30", 33_333)]


def test_several_servers_run_each_slot_once(clocked: Clocked, tmp_path: Path, database_url: str) -> None:
    org = make_org(clocked.platform, "acme")
    _store_bytes(clocked, org, _GB)
    others = [make_platform(tmp_path / f"server{i}", database_url, clock=clocked.clock) for i in range(2)]
    for other in others:  # the same shared artifact store
        other.billing_scheduler._store = clocked.platform.store
    try:
        clocked.move_to(datetime(2026, 12, 1, 0, 30, tzinfo=UTC))
        schedulers = [clocked.platform.billing_scheduler] + [other.billing_scheduler for other in others]
        runs, failures = [], []
        start = threading.Barrier(len(schedulers))

        def run(index: int) -> None:
            start.wait()
            try:
                runs.append(schedulers[index].run_due())
            except Exception as exc:  # pragma: no cover - reported below
                failures.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(schedulers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        assert sorted(r.claimed for r in runs) == [False, False, True]
        assert _invoices(clocked) == [(org, "2026-11")]
        assert _storage(clocked) == [(org, "2026-11-30", 33_333)]
    finally:
        for other in others:
            other.close()


def test_the_scheduler_thread_runs_the_chores_and_stops(clocked: Clocked) -> None:
    platform = clocked.platform
    org = make_org(platform, "acme")
    clocked.move_to(datetime(2026, 12, 1, 0, 30, tzinfo=UTC))
    scheduler = BillingScheduler(
        platform.db,
        platform.meter,
        platform.store,
        clocked.clock,
        currency="USD",
        interval_s=0.02,
        finalize_grace_s=300,
    )
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while _invoices(clocked) == [] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        scheduler.close()
    assert _invoices(clocked) == [(org, "2026-11")]
