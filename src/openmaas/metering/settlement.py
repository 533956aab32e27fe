"""The SQL of a ledger batch: insert-if-new, then settle holds, add spend and add the inserted rows
to the hourly sums, in one transaction (on PostgreSQL's common batch, in one statement).

Every statement is conditional on the database's state at the write, so two API servers
writing the same event, or a retry of a batch whose commit was lost, meter once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.orm import Session

from openmaas.db.database import Database
from openmaas.metering.events import UsageEvent
from openmaas.metering.hourly import pg_upsert_from
from openmaas.metering.tables import EVENT_COLUMNS, UNIT_COLUMNS


class Sql:
    """Plain SQL on a DBAPI connection inside the caller's transaction: `?` placeholders on both
    databases (turned into psycopg's `%s`). The ledger's hot path avoids ORM overhead this way."""

    def __init__(self, dbapi_connection: Any, *, is_sqlite: bool) -> None:
        self._connection = dbapi_connection
        self.is_sqlite = is_sqlite

    @classmethod
    def of(cls, session: Session, db: Database) -> Sql:
        return cls(session.connection().connection, is_sqlite=db.is_sqlite)

    def run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = self._connection.cursor()
        cursor.execute(sql if self.is_sqlite else sql.replace("?", "%s"), params)
        return cursor

    def time(self, when: datetime) -> Any:
        """An instant as `UTCDateTime` stores it: naive UTC (SQLite: SQLAlchemy's text format, so
        ORM reads and range queries see the same values)."""
        if self.is_sqlite:
            utc = when if when.tzinfo is UTC else when.astimezone(UTC)
            # "%Y-%m-%d %H:%M:%S.%f" without its "+00:00": a quarter of strftime's cost (per event).
            return utc.isoformat(" ", "microseconds")[:26]
        return self.pg_time(when)

    @staticmethod
    def pg_time(when: datetime) -> datetime:
        """`time` on PostgreSQL."""
        return (when if when.tzinfo is UTC else when.astimezone(UTC)).replace(tzinfo=None)

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        cursor = self._connection.cursor()
        cursor.executemany(sql if self.is_sqlite else sql.replace("?", "%s"), rows)
        return cursor


@contextmanager
def transaction(db: Database, connection: Any = None) -> Iterator[Sql]:
    """A write transaction in plain SQL on `connection` (a DBAPI connection the caller holds) or on
    one from the pool; SQLite's begins IMMEDIATE like `Database.session()`. On failure it rolls
    back, closes the connection and re-raises."""
    own = connection is None
    if own:
        connection = db.engine.raw_connection()
    sql = Sql(connection, is_sqlite=db.is_sqlite)
    try:
        if db.is_sqlite:
            sql.run("BEGIN IMMEDIATE")
        elif getattr(getattr(connection, "dbapi_connection", None), "autocommit", False):
            sql.run("BEGIN")  # the ledger writer's connection runs single statements in autocommit
        yield sql
        connection.commit()
    except BaseException:
        try:
            connection.rollback()
        finally:
            connection.close()
        raise
    if own:
        connection.close()


# The ledger's columns in the order `insert_new` takes each row's values.
COLUMNS = (*EVENT_COLUMNS, *UNIT_COLUMNS)


def insert_new(sql: Sql, rows: list[tuple[Any, ...]]) -> set[str] | None:
    """Insert the rows (one per event) whose event id is not in the ledger yet. Returns None when
    every row was inserted (the common case), else the event ids that were.

    Times must already be in storage format (`Sql.time`).
    """
    if not rows:
        return None
    if sql.is_sqlite:
        # Write transactions on SQLite are serial (BEGIN IMMEDIATE): rows past `before` are ours.
        before = sql.run("SELECT coalesce(max(seq), 0) FROM usage_events").fetchone()[0]
        if sql.run_many(_SQLITE_INSERT, rows).rowcount == len(rows):
            return None
        fresh = sql.run("SELECT event_id FROM usage_events WHERE seq > ?", (before,))
        return {event_id for (event_id,) in fresh}
    # PostgreSQL: one constant statement over column arrays (`unnest`), so the server plans it
    # once and the driver sends one array per column instead of one parameter per row and column.
    result = sql.run(_PG_INSERT, tuple(list(column) for column in zip(*rows, strict=True)))
    if result.rowcount == len(rows):
        return None
    return {event_id for (event_id,) in result}


_SQLITE_INSERT = (
    f"INSERT INTO usage_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_PG_TYPES = {
    "occurred_at": "timestamp",
    "recorded_at": "timestamp",
    "cost_micros": "bigint",
    **{name: "bigint" for name in UNIT_COLUMNS},
}
_PG_ARRAYS = ", ".join(f"%s::{_PG_TYPES.get(name, 'text')}[]" for name in COLUMNS)
_PG_RECORD = ", ".join(f"{name} {_PG_TYPES.get(name, 'text')}" for name in COLUMNS)
_PG_INSERT = (
    f"INSERT INTO usage_events ({', '.join(COLUMNS)}) SELECT * FROM unnest({_PG_ARRAYS}) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)


def insert_and_spend(
    sql: Sql,
    rows: list[tuple[Any, ...]],
    periods: list[str],
    leases: list[str | None],
    hours: list[Any],
) -> set[str] | None:
    """PostgreSQL, in one statement (atomic on its own, so one round trip in autocommit): insert the
    rows whose event id is new, add the new rows' cost to their organisation's account and key
    budget, in each row's billing period (`periods`, one per row), deduct it from the budget
    lease each row was admitted against (`leases`, one per row, None for none) and from the
    reservation, and add the new rows to the hourly and daily sums, each in its hour and day
    (`hours`, one (hour, day start, day end) per row).
    Returns what `insert_new` does.

    Only for batches whose event ids are distinct, where each organisation and key has one period,
    and with no single-request hold to release: `apply` handles the rest."""
    # One JSON parameter for the whole batch: the driver adapts one string instead of a list per
    # column (28 of them, most of the statement's client-side cost for a small batch).
    batch = orjson.dumps(
        [
            {
                **dict(zip(COLUMNS, row, strict=True)),
                "period": period,
                "lease": lease,
                "hour": hour,
                "day_start": day_start,
                "day_end": day_end,
            }
            for row, period, lease, (hour, day_start, day_end) in zip(
                rows, periods, leases, hours, strict=True
            )
        ]
    ).decode()
    new = {event_id for (event_id,) in sql.run(_PG_INSERT_AND_SPEND, (batch,)).fetchall()}
    return None if len(new) == len(rows) else new


# Each data-modifying part runs once and sees only the rows this statement inserted (`ins`), so a
# retried event adds nothing; `leased` mirrors `deduct_leases`, the account upsert and key update
# mirror `_ACCOUNT_UPSERT` and `_KEY_UPDATE`, releasing what `leased` deducted, and `hourly` is
# `HourlySums.write`'s upserts.
_PG_INSERT_AND_SPEND = f"""
WITH batch AS (
    SELECT * FROM json_to_recordset(?::json) AS b({_PG_RECORD}, period text, lease text, hour timestamp,
                                                   day_start timestamp, day_end timestamp)
),
ins AS (
    INSERT INTO usage_events ({", ".join(COLUMNS)}) SELECT {", ".join(COLUMNS)} FROM batch
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, org_id, api_key_id, cost_micros
),
spent AS (SELECT ins.*, batch.period, batch.lease FROM ins JOIN batch USING (event_id)),
leased AS (
    UPDATE budget_holds SET
        org_micros = budget_holds.org_micros - CASE WHEN budget_holds.org_lease THEN c.cost ELSE 0 END,
        key_micros = budget_holds.key_micros - CASE WHEN budget_holds.key_lease THEN c.cost ELSE 0 END
    FROM (SELECT lease, sum(cost_micros) AS cost FROM spent WHERE lease IS NOT NULL GROUP BY lease) AS c
    WHERE budget_holds.id = c.lease
    RETURNING budget_holds.org_id, budget_holds.api_key_id,
              CASE WHEN budget_holds.org_lease THEN c.cost ELSE 0 END AS org_release,
              CASE WHEN budget_holds.key_lease THEN c.cost ELSE 0 END AS key_release
),
org_released AS (SELECT org_id, sum(org_release) AS amount FROM leased GROUP BY org_id),
key_released AS (
    SELECT api_key_id, sum(key_release) AS amount FROM leased WHERE api_key_id IS NOT NULL GROUP BY api_key_id
),
orgs AS (
    INSERT INTO billing_accounts (org_id, balance_micros, prepaid, reserved_micros, period,
                                  period_spend_micros, unbilled_micros)
    SELECT s.org_id, 0, false, -coalesce(max(r.amount), 0), s.period, sum(s.cost_micros), sum(s.cost_micros)
    FROM spent AS s LEFT JOIN org_released AS r USING (org_id) GROUP BY s.org_id, s.period
    ON CONFLICT (org_id) DO UPDATE SET
        reserved_micros = billing_accounts.reserved_micros + EXCLUDED.reserved_micros,
        period_spend_micros = CASE
            WHEN billing_accounts.period = EXCLUDED.period
                THEN billing_accounts.period_spend_micros + EXCLUDED.period_spend_micros
            WHEN billing_accounts.period < EXCLUDED.period THEN EXCLUDED.period_spend_micros
            ELSE billing_accounts.period_spend_micros END,
        period = CASE WHEN billing_accounts.period < EXCLUDED.period THEN EXCLUDED.period
                      ELSE billing_accounts.period END,
        unbilled_micros = billing_accounts.unbilled_micros + EXCLUDED.unbilled_micros
),
keys AS (
    UPDATE key_budgets SET
        reserved_micros = key_budgets.reserved_micros - coalesce(s.released, 0),
        period_spend_micros = CASE
            WHEN key_budgets.period = s.period THEN key_budgets.period_spend_micros + s.cost
            WHEN key_budgets.period < s.period THEN s.cost
            ELSE key_budgets.period_spend_micros END,
        period = CASE WHEN key_budgets.period < s.period THEN s.period ELSE key_budgets.period END
    FROM (SELECT sp.api_key_id, sp.period, sum(sp.cost_micros) AS cost, max(r.amount) AS released
          FROM spent AS sp LEFT JOIN key_released AS r USING (api_key_id)
          WHERE sp.api_key_id IS NOT NULL GROUP BY sp.api_key_id, sp.period) AS s
    WHERE key_budgets.key_id = s.api_key_id
),
hourly AS ({pg_upsert_from("ins", "batch")}
),
daily AS ({pg_upsert_from("ins", "batch", days=True)}
)
SELECT event_id FROM ins
"""


@dataclass
class Spend:
    """What a batch adds up to, per organisation and key and period, and the holds it releases."""

    org_cost: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    key_cost: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    hold_ids: list[str] = field(default_factory=list)
    lease_cost: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by lease id

    def add(self, event: UsageEvent, period: str, cost: int) -> None:
        self.org_cost[(event.org_id, period)] += cost
        if event.api_key_id is not None:
            self.key_cost[(event.api_key_id, period)] += cost
        hold = event.hold
        if hold is None or hold.hold_id is None:
            return
        if not hold.lease:
            self.hold_ids.append(hold.hold_id)
        elif cost:
            self.lease_cost[hold.hold_id] += cost


# Spend of an earlier month than the row's current one (a late event) is not part of this month.
_ACCOUNT_UPSERT = """
INSERT INTO billing_accounts (org_id, balance_micros, prepaid, reserved_micros, period,
                              period_spend_micros, unbilled_micros)
VALUES (?, 0, false, 0, ?, ?, ?)
ON CONFLICT (org_id) DO UPDATE SET
    reserved_micros = billing_accounts.reserved_micros - ?,
    period_spend_micros = CASE WHEN billing_accounts.period = ? THEN billing_accounts.period_spend_micros + ?
                               WHEN billing_accounts.period < ? THEN ?
                               ELSE billing_accounts.period_spend_micros END,
    period = CASE WHEN billing_accounts.period < ? THEN ? ELSE billing_accounts.period END,
    unbilled_micros = billing_accounts.unbilled_micros + ?
"""
_KEY_UPDATE = """
UPDATE key_budgets SET
    reserved_micros = reserved_micros - ?,
    period_spend_micros = CASE WHEN period = ? THEN period_spend_micros + ?
                               WHEN period < ? THEN ?
                               ELSE period_spend_micros END,
    period = CASE WHEN period < ? THEN ? ELSE period END
WHERE key_id = ?
"""


def apply(sql: Sql, spend: Spend) -> None:
    """Release the batch's holds, deduct its cost from its leases, and add the cost to each account
    and key budget."""
    held, key_held = take_holds(sql, spend.hold_ids)
    deduct_leases(sql, spend.lease_cost, held, key_held)
    for (org_id, period), cost in sorted(spend.org_cost.items(), key=lambda item: item[0][1]):
        release = held.pop(org_id, 0)
        sql.run(
            _ACCOUNT_UPSERT,
            (org_id, period, cost, cost, release, period, cost, period, cost, period, period, cost),
        )
    for (key_id, period), cost in sorted(spend.key_cost.items(), key=lambda item: item[0][1]):
        release = key_held.pop(key_id, 0)
        sql.run(_KEY_UPDATE, (release, period, cost, period, cost, period, period, key_id))
    # Holds of accounts this batch added nothing to (cannot happen for the org; kept exact anyway).
    release_amounts(sql, held, key_held)


def take_holds(sql: Sql, hold_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Delete these holds; return what they held per org and per key. Holds already gone (settled,
    released or expired) are not returned, so nothing is released twice."""
    org_held: dict[str, int] = defaultdict(int)
    key_held: dict[str, int] = defaultdict(int)
    if not hold_ids:
        return org_held, key_held
    rows = sql.run(
        f"DELETE FROM budget_holds WHERE id IN ({', '.join(['?'] * len(hold_ids))}) "
        "RETURNING org_id, api_key_id, org_micros, key_micros",
        tuple(hold_ids),
    )
    for org_id, api_key_id, org_micros, key_micros in rows.fetchall():
        org_held[org_id] += org_micros
        if api_key_id is not None:
            key_held[api_key_id] += key_micros
    return org_held, key_held


def deduct_leases(
    sql: Sql, costs: dict[str, int], org_held: dict[str, int], key_held: dict[str, int]
) -> None:
    """Deduct each lease's metered cost from its row, and add what was deducted to the amounts to
    release from the reservations (`org_held`, `key_held`). A lease already returned or expired
    deducts nothing: its return released all it held."""
    for lease_id, cost in sorted(costs.items()):
        row = sql.run(
            "UPDATE budget_holds SET "
            "org_micros = org_micros - CASE WHEN org_lease THEN ? ELSE 0 END, "
            "key_micros = key_micros - CASE WHEN key_lease THEN ? ELSE 0 END "
            "WHERE id = ? RETURNING org_id, api_key_id, org_lease, key_lease",
            (cost, cost, lease_id),
        ).fetchone()
        if row is None:
            continue
        org_id, api_key_id, org_lease, key_lease = row
        if org_lease:
            org_held[org_id] = org_held.get(org_id, 0) + cost
        if key_lease and api_key_id is not None:
            key_held[api_key_id] = key_held.get(api_key_id, 0) + cost


def release_amounts(sql: Sql, org_held: dict[str, int], key_held: dict[str, int]) -> None:
    for org_id, amount in org_held.items():
        if amount:
            sql.run(
                "UPDATE billing_accounts SET reserved_micros = reserved_micros - ? WHERE org_id = ?",
                (amount, org_id),
            )
    for key_id, amount in key_held.items():
        if amount:
            sql.run(
                "UPDATE key_budgets SET reserved_micros = reserved_micros - ? WHERE key_id = ?",
                (amount, key_id),
            )
