"""The check every hourly-sums test makes: `usage_hours` and `usage_days` hold exactly the ledger's
sums."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select

from openmaas.bootstrap import Platform
from openmaas.metering.tables import UsageDay, UsageHour, UsageRecord, usage_lines

Sums = dict[tuple[str, ...], tuple[int, int, int]]


def ledger_sums(platform: Platform, org_id: str) -> Sums:
    """The ledger's events of `org_id` summed per unit and dimensions: (quantity, cost, events)."""
    lines = usage_lines(UsageRecord.org_id == org_id)
    key = (lines.c.unit, lines.c.model, lines.c.api_key_id, lines.c.deployment, lines.c.resource_class)
    query = select(
        *key, lines.c.price_ref, func.sum(lines.c.quantity), func.sum(lines.c.cost_micros), func.count()
    ).group_by(*key, lines.c.price_ref)
    with platform.db.read_session() as session:
        rows = session.execute(query).all()
    return {tuple(v or "" for v in row[:6]): (int(row[6]), int(row[7]), int(row[8])) for row in rows}


def hourly_sums(platform: Platform, org_id: str, table: type[UsageHour | UsageDay] = UsageHour) -> Sums:
    """`usage_hours` (or `usage_days`) of `org_id`, its hours added up, keyed as `ledger_sums`."""
    sums: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
    with platform.db.read_session() as session:
        for hour in session.scalars(select(table).where(table.org_id == org_id)):
            total = sums[
                (hour.unit, hour.model, hour.api_key_id, hour.deployment, hour.resource_class, hour.price_ref)
            ]
            total[0] += hour.quantity
            total[1] += hour.cost_micros
            total[2] += hour.events
    return {key: (q, c, n) for key, (q, c, n) in sums.items()}


def assert_hours_match_ledger(platform: Platform, org_id: str) -> Sums:
    ledger = ledger_sums(platform, org_id)
    assert hourly_sums(platform, org_id) == ledger
    assert hourly_sums(platform, org_id, UsageDay) == ledger
    return ledger
