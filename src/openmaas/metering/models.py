"""The usage ledger table: append-only, one row per (event, unit), unique on that pair."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openmaas.db.base import Base, UTCDateTime


class UsageRecord(Base):
    """Rows are inserted by the ledger writer and never updated or deleted by the platform.

    `cost_micros` is the list cost when written (price × quantity under `price_ref`); invoices
    apply included quantities and graduated tiers over the month on top of the same prices.
    """

    __tablename__ = "usage_events"
    __table_args__ = (
        UniqueConstraint("event_id", "unit", name="uq_usage_events_event_id_unit"),
        Index("ix_usage_events_org_id_occurred_at", "org_id", "occurred_at"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(120))
    unit: Mapped[str] = mapped_column(String(40))
    org_id: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str | None] = mapped_column(String(200))
    deployment: Mapped[str | None] = mapped_column(String(200))
    resource_class: Mapped[str | None] = mapped_column(String(20))
    quantity: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    price_ref: Mapped[str | None] = mapped_column(String(60))
    seller_org_id: Mapped[str | None] = mapped_column(String(40))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RateLimitOverride(Base):
    """Per-organisation or per-key limits replacing the plan's (`subject_id` is `org_…`/`key_…`)."""

    __tablename__ = "rate_limit_overrides"

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)


class RateLimitBucket(Base):
    """A token bucket shared by every API server (the `database` rate limiter of cluster mode).

    `level_milli` is the bucket's content in thousandths of a request or token; `updated_us` the
    wall-clock time (µs since the epoch) it was last refilled.
    """

    __tablename__ = "rate_limit_buckets"

    subject: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    level_milli: Mapped[int] = mapped_column(BigInteger)
    updated_us: Mapped[int] = mapped_column(BigInteger)


class BudgetHold(Base):
    """A reservation in flight. Settling its usage deletes it; one left by a crashed server is
    released when it expires (`BudgetGuard.release_expired`)."""

    __tablename__ = "budget_holds"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[str | None] = mapped_column(String(40))
    org_micros: Mapped[int] = mapped_column(BigInteger)
    key_micros: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
