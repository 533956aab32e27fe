"""Metering's tables: the usage ledger (append-only, one row per event, unique on its id),
`usage_lines`, the same ledger one row per (event, unit), and `usage_hours`, its hourly sums that
reports and invoices read (written with the events: see `metering/hourly.py`); rate-limit
overrides and shared buckets; budget holds, and the organisation accounts and key budgets they
reserve against (billing moves an account's wallet; metering settles spend into it).

One row per event, with a quantity and a cost column per unit, is what makes the ledger cheap to
write: an inference event is one index entry per index, not three (requests, input and output
tokens), and the unique event id alone decides that a retried event is a no-op.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Subquery,
    UniqueConstraint,
    false,
    literal,
    select,
    union_all,
)
from sqlalchemy.orm import Mapped, mapped_column

from openmaas.db.base import Base, UTCDateTime
from openmaas.units import UNITS


class UsageRecord(Base):
    """Rows are inserted by the ledger writer and never updated or deleted by the platform.

    `qty_<unit>`/`cost_<unit>` are NULL for units the event did not use. A cost is the list cost
    when written (price × quantity under `price_ref`); invoices apply included quantities and
    graduated tiers over the month on top of the same prices. `cost_micros` is the event's total.
    """

    __tablename__ = "usage_events"
    __table_args__ = (
        UniqueConstraint("event_id", name="uq_usage_events_event_id"),
        Index("ix_usage_events_org_id_occurred_at", "org_id", "occurred_at"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(120))
    org_id: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str | None] = mapped_column(String(200))
    deployment: Mapped[str | None] = mapped_column(String(200))
    resource_class: Mapped[str | None] = mapped_column(String(20))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    price_ref: Mapped[str | None] = mapped_column(String(60))
    seller_org_id: Mapped[str | None] = mapped_column(String(40))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    qty_requests: Mapped[int | None] = mapped_column(BigInteger)
    cost_requests: Mapped[int | None] = mapped_column(BigInteger)
    qty_rows: Mapped[int | None] = mapped_column(BigInteger)
    cost_rows: Mapped[int | None] = mapped_column(BigInteger)
    qty_input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    qty_output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    qty_compute_ms: Mapped[int | None] = mapped_column(BigInteger)
    cost_compute_ms: Mapped[int | None] = mapped_column(BigInteger)
    qty_bytes_ingested: Mapped[int | None] = mapped_column(BigInteger)
    cost_bytes_ingested: Mapped[int | None] = mapped_column(BigInteger)
    qty_storage_gb_month_micros: Mapped[int | None] = mapped_column(BigInteger)
    cost_storage_gb_month_micros: Mapped[int | None] = mapped_column(BigInteger)
    qty_trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    qty_batch_input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_batch_input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    qty_batch_output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_batch_output_tokens: Mapped[int | None] = mapped_column(BigInteger)


# The event columns every line repeats, and the per-unit column pairs, in the writer's order.
EVENT_COLUMNS = (
    "event_id",
    "org_id",
    "api_key_id",
    "model",
    "deployment",
    "resource_class",
    "occurred_at",
    "cost_micros",
    "price_ref",
    "seller_org_id",
    "recorded_at",
)
UNIT_COLUMNS = tuple(name for unit in UNITS for name in (f"qty_{unit}", f"cost_{unit}"))
_LINE_SEQ_SCALE = 16  # >= len(UNITS): a line's `seq` is its event's × 16 + the unit's index
assert len(UNITS) <= _LINE_SEQ_SCALE, "a seventeenth unit needs a larger _LINE_SEQ_SCALE"


def usage_lines(*conditions: ColumnElement[bool]) -> Subquery:
    """The ledger as one row per (event, unit) with `unit`, `quantity` and `cost_micros` columns,
    like a per-unit table; `conditions` on `UsageRecord` filter every branch (so indexes apply)."""
    branches: list[Any] = []
    for index, unit in enumerate(UNITS):
        quantity = getattr(UsageRecord, f"qty_{unit}")
        branches.append(
            select(
                (UsageRecord.seq * _LINE_SEQ_SCALE + index).label("seq"),
                UsageRecord.event_id,
                literal(unit, String(40)).label("unit"),
                UsageRecord.org_id,
                UsageRecord.api_key_id,
                UsageRecord.model,
                UsageRecord.deployment,
                UsageRecord.resource_class,
                quantity.label("quantity"),
                UsageRecord.occurred_at,
                getattr(UsageRecord, f"cost_{unit}").label("cost_micros"),
                UsageRecord.price_ref,
                UsageRecord.seller_org_id,
            ).where(quantity.is_not(None), *conditions)
        )
    return union_all(*branches).subquery("usage_lines")


# The columns an hour of usage is summed by, besides the organisation, the hour and the unit.
HOURLY_DIMENSIONS = ("model", "api_key_id", "deployment", "resource_class", "price_ref")


class _SummedUsage:
    """What an hour's and a day's sums of usage share: the dimensions (`HOURLY_DIMENSIONS`, ''
    for none) and the sums."""

    model: Mapped[str] = mapped_column(String(200))
    api_key_id: Mapped[str] = mapped_column(String(40))
    deployment: Mapped[str] = mapped_column(String(200))
    resource_class: Mapped[str] = mapped_column(String(20))
    price_ref: Mapped[str] = mapped_column(String(60))
    quantity: Mapped[int] = mapped_column(BigInteger)
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    events: Mapped[int] = mapped_column(BigInteger)


class UsageHour(_SummedUsage, Base):
    """An hour of an organisation's usage of one unit, per key, model, deployment, resource class
    and price sheet (pricebook or listing, whose owner is the seller): what reports and invoices
    read instead of the events. The ledger writer adds to it in the statement or transaction that
    inserts the events, from the rows that write inserted, so it never drifts from the ledger and a
    retried event adds nothing.

    `hour_start` begins an hour of the organisation's local time when written: a UTC hour in most
    zones, half past or a quarter to in zones such as India's or Nepal's, so that its days and
    months are whole hours. `events`: how many events used the unit. The dimensions hold '' for
    none (a NULL would make every row unique).
    """

    __tablename__ = "usage_hours"
    __table_args__ = (
        PrimaryKeyConstraint("org_id", "hour_start", "unit", *HOURLY_DIMENSIONS, name="pk_usage_hours"),
        {"sqlite_with_rowid": False},  # rows live in the key's order: an org's hours are one range
    )

    org_id: Mapped[str] = mapped_column(String(40))
    hour_start: Mapped[datetime] = mapped_column(UTCDateTime())
    unit: Mapped[str] = mapped_column(String(40))


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
    """A reservation: one request's in flight, or a server's lease on a budget.

    A request's hold is deleted when its usage settles. A lease (`org_lease` / `key_lease`: it holds
    budget on the organisation / the key) is a slice of budget one server admits requests against
    in memory; settling each request's usage deducts its cost from the lease and from the account's
    `reserved_micros` alike, and the server deletes it when idle. Either, left by a crashed server,
    is released when it expires (`BudgetGuard.release_expired`)."""

    __tablename__ = "budget_holds"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[str | None] = mapped_column(String(40))
    org_micros: Mapped[int] = mapped_column(BigInteger)
    key_micros: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    org_lease: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    key_lease: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class BillingAccount(Base):
    """An organisation's wallet and monthly cap, plus the running sums budgets are checked against.

    `reserved_micros`: worst-case costs of requests in flight. `period_spend_micros`: list cost
    metered in `period` (YYYY-MM in the org's time zone). `unbilled_micros`: list cost metered
    but not yet on a finalised invoice, which a prepaid wallet must still cover.
    """

    __tablename__ = "billing_accounts"

    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    balance_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    prepaid: Mapped[bool] = mapped_column(Boolean, default=False)
    monthly_cap_micros: Mapped[int | None] = mapped_column(BigInteger)
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    period: Mapped[str] = mapped_column(String(7), default="")
    period_spend_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    unbilled_micros: Mapped[int] = mapped_column(BigInteger, default=0)


class KeyBudget(Base):
    """A monthly spending cap on one API key."""

    __tablename__ = "key_budgets"

    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    monthly_cap_micros: Mapped[int | None] = mapped_column(BigInteger)
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    period: Mapped[str] = mapped_column(String(7), default="")
    period_spend_micros: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageDay(_SummedUsage, Base):
    """A day of an organisation's usage of one unit, per the dimensions of `UsageHour`: the same
    sums a day at a time, written with them (same statement or transaction), for day-grained
    reports (`metering.usage_days`).

    [`day_start`, `day_end`) is the calendar day, in the organisation's zone when written, that
    the events' times fall in (UTC instants of its local midnights: 23 or 25 hours on summer-time
    days). Both bounds are in the key: after the organisation changed zones, two zones' days of the
    same instant stay apart, and readers use only a day that is also a day of the zone they report
    in (the other days are summed from the hours)."""

    __tablename__ = "usage_days"
    __table_args__ = (
        PrimaryKeyConstraint(
            "org_id", "day_start", "day_end", "unit", *HOURLY_DIMENSIONS, name="pk_usage_days"
        ),
        {"sqlite_with_rowid": False},
    )

    org_id: Mapped[str] = mapped_column(String(40))
    day_start: Mapped[datetime] = mapped_column(UTCDateTime())
    day_end: Mapped[datetime] = mapped_column(UTCDateTime())
    unit: Mapped[str] = mapped_column(String(40))


class RequestFailureHour(Base):
    """Failed served requests of an organisation in an hour of its local time, per deployment
    and key ('' for none): the error rate's numerator (`metering.failures`). Never billed."""

    __tablename__ = "request_failure_hours"
    __table_args__ = (
        PrimaryKeyConstraint(
            "org_id", "hour_start", "deployment", "api_key_id", name="pk_request_failure_hours"
        ),
    )

    org_id: Mapped[str] = mapped_column(String(40))
    hour_start: Mapped[datetime] = mapped_column(UTCDateTime())
    deployment: Mapped[str] = mapped_column(String(200))
    api_key_id: Mapped[str] = mapped_column(String(40))
    failures: Mapped[int] = mapped_column(BigInteger)
