"""Billing tables: credit transactions, pricebooks, marketplace listings, finalised invoices and
the scheduler's chores. Amounts are integer micro-units. (The accounts and key budgets that budget
reservations are checked against are metering's: `metering/tables.py`.)"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openmaas.db.base import Base, UTCDateTime


class CreditTransaction(Base):
    """The wallet's audit trail: top-ups, invoice payments, marketplace revenue. Never updated."""

    __tablename__ = "credit_transactions"
    __table_args__ = (Index("ix_credit_transactions_org_id_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(30))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    balance_after_micros: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_key_id: Mapped[str | None] = mapped_column(String(40))
    reference: Mapped[str | None] = mapped_column(String(60))
    note: Mapped[str | None] = mapped_column(String(300))


class Pricebook(Base):
    """One version of a plan's prices. A new version applies from `effective_from`; usage keeps
    the version that priced it (`usage_events.price_ref`)."""

    __tablename__ = "pricebooks"
    __table_args__ = (UniqueConstraint("plan", "version", name="uq_pricebooks_plan_version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    plan: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime())
    currency: Mapped[str] = mapped_column(String(3))
    monthly_fee_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    components: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Listing(Base):
    """A model reference published to the marketplace at its owner's price. A price change
    withdraws the listing and creates a new one, so past usage keeps its price."""

    __tablename__ = "marketplace_listings"
    __table_args__ = (Index("ix_marketplace_listings_model", "model"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    owner_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    description: Mapped[str] = mapped_column(String(500), default="")
    currency: Mapped[str] = mapped_column(String(3))
    components: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    platform_share_bps: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Invoice(Base):
    """A finalised month. Drafts (the current month) are computed on request, never stored."""

    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("org_id", "period", name="uq_invoices_org_id_period"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    period: Mapped[str] = mapped_column(String(7))
    currency: Mapped[str] = mapped_column(String(3))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    total_micros: Mapped[int] = mapped_column(BigInteger)
    finalized_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BillingChore(Base):
    """The last time slot a scheduled billing chore ran in (`billing/scheduler.py`).

    Advancing `slot` with a conditional UPDATE, in the transaction that does the chore, is what lets
    only one of several servers run a slot's chore, and a crashed run's slot be run again."""

    __tablename__ = "billing_chores"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    slot: Mapped[str] = mapped_column(String(32))
    ran_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
