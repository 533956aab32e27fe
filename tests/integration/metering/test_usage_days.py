"""`usage_days`, the daily sums that day-grained reports read: written with the events, and a report
by day read through them equals the same report summed from the hours and events, whatever the
zone, the range and the filters (summer-time days, half-hour zones, an organisation that changed
zones, ranges that cut days)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import update

from openmaas.metering.events import UsageEvent
from openmaas.metering.ledger import UsageLedger
from openmaas.metering.tables import UsageDay
from openmaas.metering.usage_totals import usage_totals
from openmaas.tenancy.tables import Organization
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_org, make_pricebook
from tests.integration.metering.hourly_check import assert_hours_match_ledger

# Around Europe's summer-time start (29 March 2026, a 23-hour day in Berlin) and end (25 October).
_SPANS = (datetime(2026, 3, 27, 6, tzinfo=UTC), datetime(2026, 10, 23, 6, tzinfo=UTC))


def _record(platform: object, org: str, rng: random.Random, prefix: str, n: int) -> None:
    ledger = UsageLedger(platform.db, platform.metering.prices, platform.clock)  # type: ignore[attr-defined]
    try:
        receipts = []
        for i in range(n):
            at = rng.choice(_SPANS) + timedelta(seconds=rng.randrange(4 * 86400))
            units = {"requests": 1, "output_tokens": rng.randrange(1, 50)}
            model, key = rng.choice(("mv_1", "mv_2", None)), rng.choice(("key_a", "key_b", None))
            receipts.append(
                ledger.record(UsageEvent(f"{org}-{prefix}{i}", org, units, at, model=model, api_key_id=key))
            )
        assert all(receipt.wait().new for receipt in receipts)
    finally:
        ledger.close()


def _compare(platform: object, org: str, rng: random.Random, zones: tuple[str, ...]) -> int:
    """Random ranges, filters and groupings: by day through `usage_days` equals by day from the
    hours; returns how many reports read at least one stored day."""
    used = 0
    with platform.db.read_session() as session:  # type: ignore[attr-defined]
        for _ in range(8):
            zone = ZoneInfo(rng.choice(zones))
            span = rng.choice(_SPANS)
            start = rng.choice(
                [None, span - timedelta(days=1), span + timedelta(minutes=rng.randrange(5000))]
            )
            end = rng.choice(
                [None, span + timedelta(days=5), span + timedelta(minutes=rng.randrange(5000, 6000))]
            )
            by = rng.choice([(), ("model",), ("model", "api_key_id"), ("price_ref", "deployment")])
            where = rng.choice([{}, {"model": "mv_1"}, {"api_key_id": "key_b"}])
            args = {"start": start, "end": end, "by": by, "where": where, "days": zone}
            daily = usage_totals(session, org, **args)
            assert daily == usage_totals(session, org, **args, daily=False), args
            used += bool(daily)
    return used


def test_reports_by_day_equal_the_hourly_path_on_random_usage(clocked: Clocked) -> None:
    platform = clocked.platform
    make_pricebook(platform, [{"unit": "requests", "price": "0.01"}, {"unit": "output_tokens", "price": "2"}])
    rng = random.Random(19)
    berlin = make_org(platform, "berlin", timezone="Europe/Berlin")
    india = make_org(platform, "mumbai", timezone="Asia/Kolkata")
    for org in (berlin, india):
        _record(platform, org, rng, "e", 100)
        assert_hours_match_ledger(platform, org)
    with platform.db.read_session() as session:
        berlin_days = {
            (d.day_start, d.day_end) for d in session.query(UsageDay).filter(UsageDay.org_id == berlin)
        }
    # The 23-hour day that summer time starts on is one stored day.
    assert (datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC)) in berlin_days
    zones = ("Europe/Berlin", "Asia/Kolkata", "UTC", "America/New_York")
    assert _compare(platform, berlin, rng, zones) > 0
    assert _compare(platform, india, rng, zones) > 0


def test_a_zone_change_leaves_overlapping_days_to_the_hours(clocked: Clocked) -> None:
    """Days of the old and the new zone overlap: neither is read as a day of either zone."""
    platform = clocked.platform
    rng = random.Random(7)
    org = make_org(platform, "nomad", timezone="Asia/Kolkata")
    _record(platform, org, rng, "before", 80)
    with platform.db.session() as session:
        session.execute(
            update(Organization).where(Organization.id == org).values(timezone="America/New_York")
        )
    platform.metering.prices.invalidate()
    _record(platform, org, rng, "after", 80)
    assert_hours_match_ledger(platform, org)
    _compare(platform, org, rng, ("Asia/Kolkata", "America/New_York", "UTC"))
