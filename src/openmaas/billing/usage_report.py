"""`GET /v1/usage`: an organisation's ledger, summed by day, model, deployment, key or unit, or
listed event by event. Days are calendar days in the organisation's time zone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Subquery, func, select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.metering.tables import UsageRecord, usage_lines
from openmaas.pricing.money import format_micros
from openmaas.pricing.periods import zone
from openmaas.schemas import billing as schemas
from openmaas.tenancy import service as tenancy

GROUPS = ("day", "model", "deployment", "api_key_id", "unit")


@dataclass(frozen=True, slots=True)
class UsageFilter:
    start: datetime | None = None
    end: datetime | None = None
    model: str | None = None
    api_key_id: str | None = None


def _lines(org_id: str, where: UsageFilter) -> Subquery:
    """The organisation's ledger lines (one per event and unit) that `where` selects."""
    conditions = [UsageRecord.org_id == org_id]
    if where.start is not None:
        conditions.append(UsageRecord.occurred_at >= where.start)
    if where.end is not None:
        conditions.append(UsageRecord.occurred_at < where.end)
    if where.model is not None:
        conditions.append(UsageRecord.model == where.model)
    if where.api_key_id is not None:
        conditions.append(UsageRecord.api_key_id == where.api_key_id)
    return usage_lines(*conditions)


def usage(
    session: Session,
    org_id: str,
    where: UsageFilter,
    *,
    group_by: Sequence[str],
    currency: str,
) -> schemas.UsageReport:
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise errors.ValidationFailed(
            f"group_by: unknown {unknown}; choose from {list(GROUPS)}", param="group_by"
        )
    org = tenancy.get_organization(session, org_id)
    lines = _lines(org_id, where)
    columns: list[Any] = [lines.c[g] for g in group_by if g != "day"]
    if "day" in group_by:
        columns.append(lines.c.occurred_at)  # summed per local day below
    query: Select[Any] = select(
        *columns,
        func.sum(lines.c.quantity),
        func.sum(lines.c.cost_micros),
        func.count(func.distinct(lines.c.event_id)),
    ).group_by(*columns)
    rows: Sequence[Any] = session.execute(query).all()
    tz = zone(org.timezone)
    sums: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        values = list(row[: len(columns)])
        if "day" in group_by:
            values[-1] = values[-1].astimezone(tz).date().isoformat()
        total = sums.setdefault(tuple(values), [0, 0, 0])
        total[0] += int(row[-3])
        total[1] += int(row[-2])
        total[2] += int(row[-1])
    names = [g for g in group_by if g != "day"] + (["day"] if "day" in group_by else [])
    buckets = [
        schemas.UsageBucket(**dict(zip(names, key, strict=True)), quantity=q, cost=format_micros(c), events=n)
        for key, (q, c, n) in sorted(sums.items(), key=lambda item: tuple(str(v) for v in item[0]))
    ]
    return schemas.UsageReport(currency=currency, granularity="bucket", data=buckets)


def events(
    session: Session,
    org_id: str,
    where: UsageFilter,
    *,
    currency: str,
    limit: int,
    after: str | None,
) -> schemas.UsageReport:
    """Single ledger lines (an event's units), newest first; `after` is the previous page's `last_id`."""
    lines = _lines(org_id, where)
    query = select(lines)
    if after is not None:
        if not after.isdigit():
            raise errors.ValidationFailed("after: not a cursor from this list", param="after")
        query = query.where(lines.c.seq < int(after))
    rows = session.execute(query.order_by(lines.c.seq.desc()).limit(limit + 1)).all()
    data = [
        schemas.UsageEventPublic(
            request_id=row.event_id,
            unit=row.unit,
            quantity=row.quantity,
            cost=format_micros(row.cost_micros),
            occurred_at=row.occurred_at,
            model=row.model,
            deployment=row.deployment,
            api_key_id=row.api_key_id,
            resource_class=row.resource_class,
        )
        for row in rows[:limit]
    ]
    last = str(rows[:limit][-1].seq) if rows[:limit] else None
    return schemas.UsageReport(
        currency=currency, granularity="event", data=data, has_more=len(rows) > limit, last_id=last
    )
