"""Budget leases: a hold can be a server's lease on an organisation's or key's budget (see
`BudgetHold`), marked by `org_lease` / `key_lease`; existing holds are per-request holds.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("budget_holds") as batch:
        batch.add_column(sa.Column("org_lease", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("key_lease", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("budget_holds") as batch:
        batch.drop_column("key_lease")
        batch.drop_column("org_lease")
