"""The SQL of a ledger batch: insert-if-new, then settle holds and add spend, in one transaction.

Both statements are conditional on the database's state at the write, so two API servers
writing the same event, or a retry of a batch whose commit was lost, meter once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from openmaas.billing.models import BillingAccount, KeyBudget
from openmaas.db.database import Database
from openmaas.metering.events import UsageEvent
from openmaas.metering.models import UsageRecord


def dialect_insert(db: Database, table: Any) -> Any:
    return sqlite_insert(table) if db.is_sqlite else pg_insert(table)


def insert_new(session: Session, db: Database, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Insert the rows whose (event_id, unit) is not in the ledger yet; return those inserted."""
    if not rows:
        return set()
    table = UsageRecord.__table__
    statement = (
        dialect_insert(db, table)
        .on_conflict_do_nothing(index_elements=["event_id", "unit"])
        .returning(table.c.event_id, table.c.unit)
    )
    result = session.execute(statement, rows)
    return {(row.event_id, row.unit) for row in result}


@dataclass
class Spend:
    """What a batch adds up to, per organisation and key and period, and the holds it releases."""

    org_cost: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    key_cost: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    org_held: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    key_held: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, event: UsageEvent, period: str, cost: int) -> None:
        self.org_cost[(event.org_id, period)] += cost
        if event.api_key_id is not None:
            self.key_cost[(event.api_key_id, period)] += cost
        if event.hold is not None:
            self.org_held[event.hold.org_id] += event.hold.org_micros
            if event.hold.api_key_id is not None:
                self.key_held[event.hold.api_key_id] += event.hold.key_micros


def _spend_in_period(column: Any, period_column: Any, period: str, cost: int) -> Any:
    # Late events of an earlier month than the account's current one are not part of this month.
    return case(
        (period_column == period, column + cost),
        (period_column < period, cost),
        else_=column,
    )


def _latest_period(period_column: Any, period: str) -> Any:
    return case((period_column < period, period), else_=period_column)


def apply(session: Session, db: Database, spend: Spend) -> None:
    held = dict(spend.org_held)
    for (org_id, period), cost in sorted(spend.org_cost.items(), key=lambda item: item[0][1]):
        release = held.pop(org_id, 0)
        table = BillingAccount.__table__
        statement = (
            dialect_insert(db, table)
            .values(
                org_id=org_id,
                balance_micros=0,
                prepaid=False,
                reserved_micros=0,
                period=period,
                period_spend_micros=cost,
                unbilled_micros=cost,
            )
            .on_conflict_do_update(
                index_elements=["org_id"],
                set_={
                    "reserved_micros": table.c.reserved_micros - release,
                    "period_spend_micros": _spend_in_period(
                        table.c.period_spend_micros, table.c.period, period, cost
                    ),
                    "period": _latest_period(table.c.period, period),
                    "unbilled_micros": table.c.unbilled_micros + cost,
                },
            )
        )
        session.execute(statement)
    key_held = dict(spend.key_held)
    for (key_id, period), cost in sorted(spend.key_cost.items(), key=lambda item: item[0][1]):
        release = key_held.pop(key_id, 0)
        session.execute(
            update(KeyBudget)
            .where(KeyBudget.key_id == key_id)
            .values(
                reserved_micros=KeyBudget.reserved_micros - release,
                period_spend_micros=_spend_in_period(
                    KeyBudget.period_spend_micros, KeyBudget.period, period, cost
                ),
                period=_latest_period(KeyBudget.period, period),
            )
        )
