"""Billing scheduler and a cheaper ledger: the scheduler's claim table (one row per chore with the
last time slot it ran in), and `usage_events` as one row per event with a quantity and a cost
column per unit (it was one row per event and unit). Existing usage is carried over either way.

Revision ID: 0008
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0005"
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
_SHARED = (
    "event_id",
    "org_id",
    "api_key_id",
    "model",
    "deployment",
    "resource_class",
    "occurred_at",
    "price_ref",
    "seller_org_id",
    "recorded_at",
)


def _shared_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=120), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("deployment", sa.String(length=200), nullable=True),
        sa.Column("resource_class", sa.String(length=20), nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("price_ref", sa.String(length=60), nullable=True),
        sa.Column("seller_org_id", sa.String(length=40), nullable=True),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "billing_chores",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("slot", sa.String(length=32), nullable=False),
        sa.Column("ran_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_billing_chores")),
    )
    pivot = ", ".join(
        f"sum(CASE WHEN unit = '{u}' THEN quantity END) AS qty_{u}, "
        f"sum(CASE WHEN unit = '{u}' THEN cost_micros END) AS cost_{u}"
        for u in _UNITS
    )
    shared = ", ".join(f"max({c}) AS {c}" for c in _SHARED if c != "event_id")
    op.execute(
        f"CREATE TABLE usage_events_carried AS SELECT min(seq) AS first_seq, event_id, {shared}, "
        f"sum(cost_micros) AS cost_micros, {pivot} FROM usage_events GROUP BY event_id"
    )
    op.drop_index("ix_usage_events_org_id_occurred_at", table_name="usage_events")
    op.drop_table("usage_events")
    per_unit = [
        sa.Column(f"{kind}_{u}", sa.BigInteger(), nullable=True) for u in _UNITS for kind in ("qty", "cost")
    ]
    op.create_table(
        "usage_events",
        *_shared_columns(),
        *per_unit,
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_usage_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_usage_events_event_id")),
    )
    op.create_index("ix_usage_events_org_id_occurred_at", "usage_events", ["org_id", "occurred_at"])
    columns = ", ".join([*_SHARED, "cost_micros", *(c.name for c in per_unit)])
    op.execute(
        f"INSERT INTO usage_events ({columns}) SELECT {columns} FROM usage_events_carried ORDER BY first_seq"
    )
    op.execute("DROP TABLE usage_events_carried")


def downgrade() -> None:
    lines = " UNION ALL ".join(
        f"SELECT seq * 8 + {i} AS line_seq, {', '.join(_SHARED)}, '{u}' AS unit, qty_{u} AS quantity, "
        f"cost_{u} AS cost_micros FROM usage_events WHERE qty_{u} IS NOT NULL"
        for i, u in enumerate(_UNITS)
    )
    op.execute(f"CREATE TABLE usage_events_carried AS {lines}")
    op.drop_index("ix_usage_events_org_id_occurred_at", table_name="usage_events")
    op.drop_table("usage_events")
    op.create_table(
        "usage_events",
        *_shared_columns(),
        sa.Column("unit", sa.String(length=40), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_usage_events")),
        sa.UniqueConstraint("event_id", "unit", name=op.f("uq_usage_events_event_id_unit")),
    )
    op.create_index("ix_usage_events_org_id_occurred_at", "usage_events", ["org_id", "occurred_at"])
    columns = ", ".join([*_SHARED, "unit", "quantity", "cost_micros"])
    op.execute(
        f"INSERT INTO usage_events ({columns}) SELECT {columns} FROM usage_events_carried ORDER BY line_seq"
    )
    op.execute("DROP TABLE usage_events_carried")
    op.drop_table("billing_chores")
