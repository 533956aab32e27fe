"""Failed served requests per hour (`request_failure_hours`, the console's error rate), and daily
usage sums (`usage_days`), which the ledger writer keeps from now on beside the hourly
ones and day-grained reports read; filled here from the events already in the ledger.

Each organisation's events are summed into the calendar days of its zone (as the UTC instants of
its local midnights, 23 or 25 hours on summer-time days), as the writer does: one grouped insert per
organisation and day, along the ledger's (organisation, time) index. Usage of organisations deleted
since is summed in UTC days.

Revision ID: 0015_usage_days
Revises: 0014_trained_tokens
Create Date: 2026-12-07
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = "0015_usage_days"
down_revision = "0014_trained_tokens"
branch_labels = None
depends_on = None

_UNITS = (
    "requests",
    "rows",
    "input_tokens",
    "output_tokens",
    "compute_ms",
    "bytes_ingested",
    "storage_gb_month_micros",
    "trained_tokens",
)
_DIMENSIONS = ("model", "api_key_id", "deployment", "resource_class", "price_ref")
_KEY = ("org_id", "day_start", "day_end", "unit", *_DIMENSIONS)


def upgrade() -> None:
    op.create_table(
        "usage_days",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("day_start", sa.DateTime(), nullable=False),
        sa.Column("day_end", sa.DateTime(), nullable=False),
        sa.Column("unit", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=False),
        sa.Column("resource_class", sa.String(length=20), nullable=False),
        sa.Column("price_ref", sa.String(length=60), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*_KEY, name=op.f("pk_usage_days")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "request_failure_hours",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("hour_start", sa.DateTime(), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "org_id", "hour_start", "deployment", "api_key_id", name=op.f("pk_request_failure_hours")
        ),
    )
    bind = op.get_bind()
    zones: dict[str, str] = dict(bind.execute(sa.text("SELECT id, timezone FROM organizations")).all())
    spans = bind.execute(
        sa.text("SELECT org_id, min(occurred_at), max(occurred_at) FROM usage_events GROUP BY org_id")
    ).all()
    insert = _backfill().bindparams(
        sa.bindparam("start", type_=sa.DateTime()), sa.bindparam("end", type_=sa.DateTime())
    )
    for org_id, first, last in spans:
        zone = _zone(zones.get(org_id))
        day = _as_datetime(first).replace(tzinfo=UTC).astimezone(zone).date() - timedelta(days=1)
        stop = _as_datetime(last).replace(tzinfo=UTC)
        while (start := _midnight(day, zone)) <= stop:
            end = _midnight(day + timedelta(days=1), zone)
            if end > start:
                naive = {"start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)}
                bind.execute(insert, {"org_id": org_id, **naive})
            day += timedelta(days=1)


def downgrade() -> None:
    op.drop_table("usage_days")
    op.drop_table("request_failure_hours")


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def _as_datetime(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    """As `metering.hourly.midnight` (a migration keeps its own copy)."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def _backfill() -> sa.TextClause:
    dimensions = ", ".join(_DIMENSIONS)
    lines = " UNION ALL ".join(
        f"SELECT {dimensions}, '{unit}' AS unit, qty_{unit} AS quantity, coalesce(cost_{unit}, 0) AS cost "
        f"FROM usage_events WHERE org_id = :org_id AND occurred_at >= :start AND occurred_at < :end "
        f"AND qty_{unit} IS NOT NULL"
        for unit in _UNITS
    )
    key = ", ".join(f"coalesce({name}, '')" for name in _DIMENSIONS)
    return sa.text(
        f"INSERT INTO usage_days ({', '.join(_KEY)}, quantity, cost_micros, events) "
        f"SELECT :org_id, :start, :end, unit, {key}, sum(quantity), sum(cost), count(*) "
        f"FROM ({lines}) AS lines GROUP BY unit, {key}"
    )
