"""The billing scheduler's claim table: one row per chore with the last time slot it ran in.

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


def upgrade() -> None:
    op.create_table(
        "billing_chores",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("slot", sa.String(length=32), nullable=False),
        sa.Column("ran_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_billing_chores")),
    )


def downgrade() -> None:
    op.drop_table("billing_chores")
