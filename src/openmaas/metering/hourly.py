"""The ledger's hourly and daily sums (`usage_hours`, `usage_days`), as the ledger writer keeps
them: each batch adds the rows it inserted, in the same transaction (`HourlySums.write`) or, on
PostgreSQL's one-statement batch, in the same statement (`pg_upsert_from`). Only rows that write
inserted are added, so a retried or duplicate event, which the ledger's unique event id turns into a
no-op, adds nothing.

An event's hour is an hour of its organisation's local time (`HourBuckets`): in zones whose offset
is not whole hours (India, Nepal, Newfoundland) it starts at half past or a quarter to, so days and
months in that zone are whole hours. Readers never rely on it (`usage_totals` reads the events of
any hour that a boundary cuts), it only keeps them from having to.

An event's day (`day_bounds`) is the calendar day of its organisation's zone that its time falls in,
as the UTC instants of the day's first and next local midnights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from itertools import chain
from typing import Any
from zoneinfo import ZoneInfo

from openmaas.metering.events import PricedLine
from openmaas.metering.tables import HOURLY_DIMENSIONS
from openmaas.pricing.periods import zone
from openmaas.units import UNITS

HOUR = timedelta(hours=1)

# The key columns in the order of the primary key, then the sums.
_KEY = ("org_id", "hour_start", "unit", *HOURLY_DIMENSIONS)
_DAY_KEY = ("org_id", "day_start", "day_end", "unit", *HOURLY_DIMENSIONS)


def _upsert(table: str, key: Sequence[str]) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(key)}, quantity, cost_micros, events) "
        f"VALUES ({', '.join('?' * (len(key) + 3))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        f"quantity = {table}.quantity + excluded.quantity, "
        f"cost_micros = {table}.cost_micros + excluded.cost_micros, "
        f"events = {table}.events + excluded.events"
    )


_UPSERT = _upsert("usage_hours", _KEY)
_DAY_UPSERT = _upsert("usage_days", _DAY_KEY)


def hour_start(at: datetime, timezone: str) -> datetime:
    """The start (UTC) of the hour of `timezone`'s local time that the instant `at` falls in."""
    shift = int((at.astimezone(zone(timezone)).utcoffset() or timedelta()).total_seconds()) % 3600
    seconds = math.floor(at.timestamp())
    return datetime.fromtimestamp(seconds - (seconds + shift) % 3600, UTC)


def midnight(day: date, timezone: ZoneInfo) -> datetime:
    """The UTC instant at which `day` begins in `timezone` (where the zone skips its midnight, the
    instant of the skip)."""
    return datetime.combine(day, time(), tzinfo=timezone).astimezone(UTC)


def day_bounds(at: datetime, timezone: ZoneInfo) -> tuple[datetime, datetime]:
    """The local day of `timezone` that the instant `at` falls in, as [first, next midnight) in UTC."""
    day = at.astimezone(timezone).date()
    start = midnight(day, timezone)
    if at < start:  # a zone whose clocks went back across midnight
        day -= timedelta(days=1)
        start = midnight(day, timezone)
    end = midnight(day + timedelta(days=1), timezone)
    while at >= end:
        day += timedelta(days=1)
        start, end = end, midnight(day + timedelta(days=1), timezone)
    return start, end


class DayBuckets:
    """Each event's day (`day_bounds`, in the database's time format), computed once per
    organisation and day of a batch."""

    __slots__ = ("_current", "_timezone_of", "_to_storage")

    def __init__(self, timezone_of: Callable[[str], str], to_storage: Callable[[datetime], Any]) -> None:
        self._timezone_of = timezone_of
        self._to_storage = to_storage
        self._current: dict[str, tuple[datetime, datetime, tuple[Any, Any]]] = {}

    def of(self, org_id: str, at: datetime) -> tuple[Any, Any]:
        known = self._current.get(org_id)
        if known is not None and known[0] <= at < known[1]:
            return known[2]
        start, end = day_bounds(at, zone(self._timezone_of(org_id)))
        stored = (self._to_storage(start), self._to_storage(end))
        self._current[org_id] = (start, end, stored)
        return stored


class HourBuckets:
    """Each event's hour, computed once per organisation and hour of a batch; `to_storage` turns
    the hour into the database's time format (`Sql.time`)."""

    __slots__ = ("_current", "_timezone_of", "_to_storage")

    def __init__(self, timezone_of: Callable[[str], str], to_storage: Callable[[datetime], Any]) -> None:
        self._timezone_of = timezone_of
        self._to_storage = to_storage
        self._current: dict[str, tuple[datetime, datetime, Any]] = {}

    def of(self, org_id: str, at: datetime) -> Any:
        known = self._current.get(org_id)
        if known is not None and known[0] <= at < known[1]:
            return known[2]
        start = hour_start(at, self._timezone_of(org_id))
        stored = self._to_storage(start)
        self._current[org_id] = (start, start + HOUR, stored)
        return stored


class HourlySums:
    """A batch's new usage summed per organisation, hour, dimensions and unit, and per
    organisation, day, dimensions and unit.

    `add` only files the event's lines under its key; they are summed once, in `rows` (the
    writer's time per event is what bounds the ledger's rate)."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines: dict[tuple[Any, ...], list[Sequence[PricedLine]]] = {}

    def add(self, key: tuple[Any, ...], lines: Sequence[PricedLine]) -> None:
        """One inserted event: `key` is its (organisation, hour in storage format, day (`DayBuckets`),
        *values of `HOURLY_DIMENSIONS`, None for none), `lines` its priced units."""
        filed = self._lines.get(key)
        if filed is None:
            self._lines[key] = [lines]
        else:
            filed.append(lines)

    def rows(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Upsert parameters of the hours and of the days, each in key order (the same lock order
        on every server)."""
        sums: dict[tuple[Any, ...], list[int]] = {}
        days: dict[tuple[Any, ...], list[int]] = {}
        for (org_id, hour, day, *dimensions), filed in self._lines.items():
            units: dict[str, list[int]] = {}
            for unit, quantity, cost, _, _ in chain.from_iterable(filed):
                total = units.get(unit)
                if total is None:
                    units[unit] = [quantity, cost, 1]
                else:
                    total[0] += quantity
                    total[1] += cost
                    total[2] += 1
            key = tuple(value or "" for value in dimensions)
            for unit, total in units.items():
                for known in (
                    sums.setdefault((org_id, hour, unit, *key), [0, 0, 0]),
                    days.setdefault((org_id, *day, unit, *key), [0, 0, 0]),
                ):
                    known[0], known[1], known[2] = (
                        known[0] + total[0],
                        known[1] + total[1],
                        known[2] + total[2],
                    )
        return (
            sorted((*key, *total) for key, total in sums.items()),
            sorted((*key, *total) for key, total in days.items()),
        )

    def write(self, sql: Any) -> None:
        """Add the sums to `usage_hours` and `usage_days` inside the caller's transaction
        (`settlement.Sql`)."""
        if self._lines:
            hours, days = self.rows()
            sql.run_many(_UPSERT, hours)
            sql.run_many(_DAY_UPSERT, days)


def pg_upsert_from(inserted: str, batch: str, *, days: bool = False) -> str:
    """PostgreSQL: the data-modifying CTE body that adds to `usage_hours` (with `days`, to
    `usage_days`) the rows of `batch` (a relation with the ledger's columns, `hour`, `day_start`
    and `day_end`) whose event ids `inserted` returned."""
    units = ", ".join(f"('{unit}', b.qty_{unit}, b.cost_{unit})" for unit in UNITS)
    dimensions = ", ".join(f"coalesce(b.{name}, '')" for name in HOURLY_DIMENSIONS)
    table, key, times = (
        ("usage_days", _DAY_KEY, "b.day_start, b.day_end") if days else ("usage_hours", _KEY, "b.hour")
    )
    columns = ", ".join(str(i) for i in range(1, len(key) + 1))
    return f"""
    INSERT INTO {table} ({", ".join(key)}, quantity, cost_micros, events)
    SELECT b.org_id, {times}, u.unit, {dimensions}, sum(u.quantity), sum(u.cost), count(*)
    FROM {inserted} JOIN {batch} AS b USING (event_id)
    CROSS JOIN LATERAL (VALUES {units}) AS u (unit, quantity, cost)
    WHERE u.quantity IS NOT NULL
    GROUP BY {columns}
    ORDER BY {columns}
    ON CONFLICT ({", ".join(key)}) DO UPDATE SET
        quantity = {table}.quantity + EXCLUDED.quantity,
        cost_micros = {table}.cost_micros + EXCLUDED.cost_micros,
        events = {table}.events + EXCLUDED.events"""
