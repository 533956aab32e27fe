"""Platform-wide usage and revenue for the operator: every organisation's usage in a range of
hours, summed per organisation and unit from the hourly sums (never the events).

Hours are taken whole: an hour is counted when it starts in [start, end). Organisations in zones
whose hours start at half past (India's, Nepal's) may thus differ from their invoices by the usage
of the half hour at each end; their invoices are the exact figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openmaas.metering.tables import UsageHour
from openmaas.tenancy.tables import Organization


@dataclass
class OrgUsage:
    """One organisation's usage: quantity per unit, cost at list prices (micros), events."""

    org_id: str
    name: str
    plan: str
    quantities: dict[str, int] = field(default_factory=dict)
    cost_micros: int = 0

    @property
    def requests(self) -> int:
        return self.quantities.get("requests", 0)

    @property
    def tokens(self) -> int:
        return self.quantities.get("input_tokens", 0) + self.quantities.get("output_tokens", 0)


def platform_usage(session: Session, start: datetime, end: datetime) -> list[OrgUsage]:
    """Each organisation with usage in the hours starting in [start, end), by cost, highest first
    (one grouped read of the hourly sums)."""
    rows = session.execute(
        select(
            UsageHour.org_id,
            UsageHour.unit,
            func.sum(UsageHour.quantity),
            func.sum(UsageHour.cost_micros),
        )
        .where(UsageHour.hour_start >= start, UsageHour.hour_start < end)
        .group_by(UsageHour.org_id, UsageHour.unit)
    ).all()
    orgs: dict[str, OrgUsage] = {}
    for org_id, unit, quantity, cost in rows:
        use = orgs.setdefault(org_id, OrgUsage(org_id, org_id, ""))
        use.quantities[unit] = int(quantity or 0)
        use.cost_micros += int(cost or 0)
    if orgs:
        for org_id, name, plan in session.execute(
            select(Organization.id, Organization.name, Organization.plan).where(Organization.id.in_(orgs))
        ):
            orgs[org_id].name, orgs[org_id].plan = name, plan
    return sorted(orgs.values(), key=lambda u: (u.cost_micros, u.requests), reverse=True)
