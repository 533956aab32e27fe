"""Metering and billing: the usage ledger, rate-limit overrides and shared buckets, accounts and
key budgets, credit transactions, pricebooks, marketplace listings, invoices; organizations.timezone.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_holds",
        sa.Column("id", sa.String(length=120), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=True),
        sa.Column("org_micros", sa.BigInteger(), nullable=False),
        sa.Column("key_micros", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_holds")),
    )
    op.create_index(op.f("ix_budget_holds_expires_at"), "budget_holds", ["expires_at"], unique=False)
    op.create_table(
        "rate_limit_buckets",
        sa.Column("subject", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("level_milli", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject", "kind", name=op.f("pk_rate_limit_buckets")),
    )
    op.create_table(
        "pricebooks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("plan", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.DateTime(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("monthly_fee_micros", sa.BigInteger(), nullable=False),
        sa.Column("components", sa.JSON(), nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("tokens_per_minute", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pricebooks")),
        sa.UniqueConstraint("plan", "version", name="uq_pricebooks_plan_version"),
    )
    op.create_table(
        "rate_limit_overrides",
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("tokens_per_minute", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("subject_id", name=op.f("pk_rate_limit_overrides")),
    )
    with op.batch_alter_table("rate_limit_overrides", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rate_limit_overrides_org_id"), ["org_id"], unique=False)

    op.create_table(
        "usage_events",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=120), nullable=False),
        sa.Column("unit", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("deployment", sa.String(length=200), nullable=True),
        sa.Column("resource_class", sa.String(length=20), nullable=True),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("price_ref", sa.String(length=60), nullable=True),
        sa.Column("seller_org_id", sa.String(length=40), nullable=True),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_usage_events")),
        sa.UniqueConstraint("event_id", "unit", name="uq_usage_events_event_id_unit"),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index("ix_usage_events_org_id_occurred_at", ["org_id", "occurred_at"], unique=False)

    op.create_table(
        "billing_accounts",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("balance_micros", sa.BigInteger(), nullable=False),
        sa.Column("prepaid", sa.Boolean(), nullable=False),
        sa.Column("monthly_cap_micros", sa.BigInteger(), nullable=True),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("period_spend_micros", sa.BigInteger(), nullable=False),
        sa.Column("unbilled_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_billing_accounts_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_billing_accounts")),
    )
    op.create_table(
        "credit_transactions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("balance_after_micros", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("actor_key_id", sa.String(length=40), nullable=True),
        sa.Column("reference", sa.String(length=60), nullable=True),
        sa.Column("note", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_credit_transactions_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_transactions")),
    )
    with op.batch_alter_table("credit_transactions", schema=None) as batch_op:
        batch_op.create_index("ix_credit_transactions_org_id_id", ["org_id", "id"], unique=False)

    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("total_micros", sa.BigInteger(), nullable=False),
        sa.Column("finalized_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_invoices_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("org_id", "period", name="uq_invoices_org_id_period"),
    )
    op.create_table(
        "marketplace_listings",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("owner_org_id", sa.String(length=40), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("components", sa.JSON(), nullable=False),
        sa.Column("platform_share_bps", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_org_id"],
            ["organizations.id"],
            name=op.f("fk_marketplace_listings_owner_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_listings")),
    )
    with op.batch_alter_table("marketplace_listings", schema=None) as batch_op:
        batch_op.create_index("ix_marketplace_listings_model", ["model"], unique=False)

    op.create_table(
        "key_budgets",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("monthly_cap_micros", sa.BigInteger(), nullable=True),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("period_spend_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_key_budgets_key_id_api_keys"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_key_budgets")),
    )
    with op.batch_alter_table("key_budgets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_key_budgets_org_id"), ["org_id"], unique=False)

    # A plain ADD COLUMN: a batch table rebuild of `organizations` would cascade to its keys.
    op.add_column(
        "organizations", sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False)
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_budget_holds_expires_at"), table_name="budget_holds")
    op.drop_table("budget_holds")
    op.drop_table("rate_limit_buckets")
    op.drop_column("organizations", "timezone")

    with op.batch_alter_table("key_budgets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_key_budgets_org_id"))

    op.drop_table("key_budgets")
    with op.batch_alter_table("marketplace_listings", schema=None) as batch_op:
        batch_op.drop_index("ix_marketplace_listings_model")

    op.drop_table("marketplace_listings")
    op.drop_table("invoices")
    with op.batch_alter_table("credit_transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_transactions_org_id_id")

    op.drop_table("credit_transactions")
    op.drop_table("billing_accounts")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_events_org_id_occurred_at")

    op.drop_table("usage_events")
    with op.batch_alter_table("rate_limit_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rate_limit_overrides_org_id"))

    op.drop_table("rate_limit_overrides")
    op.drop_table("pricebooks")
