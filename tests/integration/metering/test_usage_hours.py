"""The ledger writer keeps `usage_hours`, the hourly sums reports and invoices read, in the same
write as the events, on each database: retries and duplicates add nothing, every write path (the
plain batch, PostgreSQL's one statement, a batch releasing request holds) adds what it inserted,
and an organisation's hours are hours of its local time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import select

from openmaas.bootstrap import Platform
from openmaas.metering.events import UsageEvent
from openmaas.metering.ledger import UsageLedger
from openmaas.metering.tables import UsageHour
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_account, make_org, make_pricebook
from tests.integration.metering.hourly_check import assert_hours_match_ledger


def _hours(platform: Platform, org_id: str) -> list[tuple[datetime, str, int, int]]:
    with platform.db.read_session() as session:
        rows = session.scalars(
            select(UsageHour).where(UsageHour.org_id == org_id).order_by(UsageHour.hour_start, UsageHour.unit)
        )
        return [(h.hour_start, h.unit, h.quantity, h.events) for h in rows]


@contextmanager
def _lingering(platform: Platform) -> Iterator[UsageLedger]:
    """A ledger that waits a moment before each batch, so what a test records at once is one batch."""
    ledger = UsageLedger(platform.db, platform.metering.prices, platform.clock, linger_s=0.3)
    try:
        yield ledger
    finally:
        ledger.close()


def test_hourly_sums_equal_the_ledger_through_retries_and_duplicates(clocked: Clocked) -> None:
    platform = clocked.platform
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "requests", "price": "0.01"}, {"unit": "output_tokens", "price": "2"}])
    ten, eleven = datetime(2026, 11, 20, 10, 5, tzinfo=UTC), datetime(2026, 11, 20, 11, 59, 59, tzinfo=UTC)
    units = {"requests": 1, "output_tokens": 10}
    with _lingering(platform) as ledger:
        # One batch with an id twice (PostgreSQL writes it in a transaction, not its one statement).
        first = [
            ledger.record(UsageEvent("a", org, {"requests": 1, "output_tokens": 300}, ten, model="mv_1")),
            *(ledger.record(UsageEvent("b", org, {"requests": 1}, ten, model="mv_2")) for _ in range(3)),
            *(ledger.record(UsageEvent(f"c{i}", org, units, eleven, api_key_id="key_x")) for i in range(50)),
        ]
        assert sum(receipt.wait().new for receipt in first) == 52
        # A retry next to new events (PostgreSQL's one statement), then one across two months.
        second = [ledger.record(UsageEvent(i, org, {"requests": 1}, ten, model="mv_1")) for i in ("a", "d")]
        assert [receipt.wait().new for receipt in second] == [False, True]
        october = datetime(2026, 10, 31, 23, 30, tzinfo=UTC)
        third = [ledger.record(UsageEvent(i, org, {"requests": 1}, october)) for i in ("c1", "old")]
        assert [receipt.wait().new for receipt in third] == [False, True]
    sums = assert_hours_match_ledger(platform, org)
    assert sum(events for (unit, *_), (_, _, events) in sums.items() if unit == "requests") == 54
    hour = datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert _hours(platform, org) == [
        (datetime(2026, 10, 31, 23, tzinfo=UTC), "requests", 1, 1),
        (hour, "output_tokens", 300, 1),
        (hour, "requests", 2, 2),  # mv_1: a and d
        (hour, "requests", 1, 1),  # mv_2: b once
        (datetime(2026, 11, 20, 11, tzinfo=UTC), "output_tokens", 500, 50),
        (datetime(2026, 11, 20, 11, tzinfo=UTC), "requests", 50, 50),
    ]


def test_usage_admitted_against_budget_leases_is_summed_once(clocked: Clocked) -> None:
    platform = clocked.platform
    org = make_org(platform, "acme")
    make_account(platform, org, prepaid_micros=10_000_000, cap_micros=50_000_000)
    make_pricebook(platform, [{"unit": "requests", "price": "0.10"}])
    receipts = []
    for i in range(20):
        admission = platform.gate.admit(org, None, f"held-{i}", worst_case={"requests": 1})
        receipts.append(platform.gate.complete(admission, {"requests": 1}))
    assert all(receipt.wait().new for receipt in receipts)
    assert assert_hours_match_ledger(platform, org) != {}
    assert [(h[1], h[2], h[3]) for h in _hours(platform, org)] == [("requests", 20, 20)]


def test_hours_are_local_hours_of_the_organisation(clocked: Clocked) -> None:
    platform = clocked.platform
    india = make_org(platform, "mumbai", timezone="Asia/Kolkata")  # UTC+5:30
    nepal = make_org(platform, "kathmandu", timezone="Asia/Kathmandu")  # UTC+5:45
    at = datetime(2026, 11, 20, 10, 17, tzinfo=UTC)
    for org in (india, nepal):
        platform.meter.record_and_wait(UsageEvent(f"{org}-1", org, {"rows": 4}, at))
        assert_hours_match_ledger(platform, org)
    assert [h[0] for h in _hours(platform, india)] == [datetime(2026, 11, 20, 9, 30, tzinfo=UTC)]
    assert [h[0] for h in _hours(platform, nepal)] == [datetime(2026, 11, 20, 10, 15, tzinfo=UTC)]
