"""Fine-tuning billed per trained token: the ledger's quantity and cost columns of the
`trained_tokens` unit (`usage_events.qty_trained_tokens`, `cost_trained_tokens`).

Revision ID: 0014_trained_tokens
Revises: 0013_files
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_trained_tokens"
down_revision = "0013_files"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("qty_trained_tokens", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("cost_trained_tokens", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_column("cost_trained_tokens")
        batch_op.drop_column("qty_trained_tokens")
