"""Hourly usage sums (`usage_hours`), which the ledger writer keeps from now on and reports and
invoices read instead of the events; filled here from the events already in the ledger.

Each organisation's events are summed into hours of its local time (UTC hours, or starting half
past or a quarter to in zones such as India's or Nepal's), as the writer does.

Revision ID: 0010_usage_hours
Revises: 0009
Create Date: 2026-12-14
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = "0010_usage_hours"
down_revision = "0009"
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
)
_DIMENSIONS = ("model", "api_key_id", "deployment", "resource_class", "price_ref")
_KEY = ("org_id", "hour_start", "unit", *_DIMENSIONS)


def upgrade() -> None:
    op.create_table(
        "usage_hours",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("hour_start", sa.DateTime(), nullable=False),
        sa.Column("unit", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=False),
        sa.Column("resource_class", sa.String(length=20), nullable=False),
        sa.Column("price_ref", sa.String(length=60), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*_KEY, name=op.f("pk_usage_hours")),
        sqlite_with_rowid=False,
    )
    bind = op.get_bind()
    groups = _orgs_by_shift(bind)
    shifted = [org for shift, orgs in groups.items() if shift for org in orgs]
    for shift, orgs in groups.items():
        org_id: sa.ColumnClause[str] = sa.column("org_id")
        # Usage of organisations deleted since is summed in UTC hours, with the whole-hour zones.
        where = org_id.in_(orgs) if shift else sa.not_(org_id.in_(shifted)) if shifted else sa.true()
        clause = where.compile(dialect=bind.dialect, compile_kwargs={"literal_binds": True})
        op.execute(_backfill(bind.dialect.name == "sqlite", shift, str(clause)))


def downgrade() -> None:
    op.drop_table("usage_hours")


def _orgs_by_shift(bind: sa.Connection) -> dict[int, list[str]]:
    """Organisations by their zone's offset now past whole hours (0, 1800 or 2700 s)."""
    now = datetime.now(UTC)
    groups: dict[int, list[str]] = {0: []}
    for org_id, timezone in bind.execute(sa.text("SELECT id, timezone FROM organizations")):
        try:
            offset = now.astimezone(ZoneInfo(timezone)).utcoffset() or timedelta()
        except (ValueError, KeyError):
            offset = timedelta()
        groups.setdefault(int(offset.total_seconds()) % 3600, []).append(org_id)
    return groups


def _backfill(sqlite: bool, shift: int, where: str) -> str:
    if sqlite:
        # The whole seconds only: strftime('%s') rounds 10:59:59.9 up to the next hour.
        seconds = "CAST(strftime('%s', substr(occurred_at, 1, 19)) AS INTEGER)"
        start = f"({seconds} + {shift}) / 3600 * 3600 - {shift}"
        hour = f"strftime('%Y-%m-%d %H:%M:%S.000000', {start}, 'unixepoch')"
    else:
        seconds = "CAST(floor(extract(epoch FROM occurred_at)) AS bigint)"
        start = f"({seconds} + {shift}) / 3600 * 3600 - {shift}"
        hour = f"to_timestamp({start}) AT TIME ZONE 'UTC'"
    dimensions = ", ".join(_DIMENSIONS)
    lines = " UNION ALL ".join(
        f"SELECT org_id, {hour} AS hour_start, '{unit}' AS unit, {dimensions}, "
        f"qty_{unit} AS quantity, coalesce(cost_{unit}, 0) AS cost FROM usage_events "
        f"WHERE qty_{unit} IS NOT NULL AND {where}"
        for unit in _UNITS
    )
    key = ", ".join(f"coalesce({name}, '')" for name in _DIMENSIONS)
    return (
        f"INSERT INTO usage_hours ({', '.join(_KEY)}, quantity, cost_micros, events) "
        f"SELECT org_id, hour_start, unit, {key}, sum(quantity), sum(cost), count(*) "
        f"FROM ({lines}) AS lines GROUP BY org_id, hour_start, unit, {key}"
    )
