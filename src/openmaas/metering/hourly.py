"""The ledger's hourly sums (`usage_hours`), as the ledger writer keeps them: each batch adds the
rows it inserted, in the same transaction (`HourlySums.write`) or, on PostgreSQL's one-statement
batch, in the same statement (`pg_upsert_from`). Only rows that write inserted are added, so a
retried or duplicate event, which the ledger's unique event id turns into a no-op, adds nothing.

An event's hour is an hour of its organisation's local time (`HourBuckets`): in zones whose offset
is not whole hours (India, Nepal, Newfoundland) it starts at half past or a quarter to, so days and
months in that zone are whole hours. Readers never rely on it (`usage_totals` reads the events of
any hour that a boundary cuts), it only keeps them from having to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

from openmaas.metering.events import PricedLine
from openmaas.metering.tables import HOURLY_DIMENSIONS
from openmaas.pricing.periods import zone
from openmaas.units import UNITS

HOUR = timedelta(hours=1)

# The key columns in the order of the primary key, then the sums.
_KEY = ("org_id", "hour_start", "unit", *HOURLY_DIMENSIONS)
_UPSERT = (
    f"INSERT INTO usage_hours ({', '.join(_KEY)}, quantity, cost_micros, events) "
    f"VALUES ({', '.join('?' * (len(_KEY) + 3))}) "
    f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
    "quantity = usage_hours.quantity + excluded.quantity, "
    "cost_micros = usage_hours.cost_micros + excluded.cost_micros, "
    "events = usage_hours.events + excluded.events"
)


def hour_start(at: datetime, timezone: str) -> datetime:
    """The start (UTC) of the hour of `timezone`'s local time that the instant `at` falls in."""
    shift = int((at.astimezone(zone(timezone)).utcoffset() or timedelta()).total_seconds()) % 3600
    seconds = math.floor(at.timestamp())
    return datetime.fromtimestamp(seconds - (seconds + shift) % 3600, UTC)


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
    """A batch's new usage summed per organisation, hour, dimensions and unit.

    `add` only files the event's lines under its key; they are summed once, in `rows` (the
    writer's time per event is what bounds the ledger's rate)."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines: dict[tuple[Any, ...], list[Sequence[PricedLine]]] = {}

    def add(self, key: tuple[Any, ...], lines: Sequence[PricedLine]) -> None:
        """One inserted event: `key` is its (organisation, hour in storage format, *values of
        `HOURLY_DIMENSIONS`, None for none), `lines` its priced units."""
        filed = self._lines.get(key)
        if filed is None:
            self._lines[key] = [lines]
        else:
            filed.append(lines)

    def rows(self) -> list[tuple[Any, ...]]:
        """Upsert parameters in key order (the same lock order on every server)."""
        sums: dict[tuple[Any, ...], list[int]] = {}
        for (org_id, hour, *dimensions), filed in self._lines.items():
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
                known = sums.setdefault((org_id, hour, unit, *key), [0, 0, 0])
                known[0], known[1], known[2] = known[0] + total[0], known[1] + total[1], known[2] + total[2]
        return sorted((*key, *total) for key, total in sums.items())

    def write(self, sql: Any) -> None:
        """Add the sums to `usage_hours` inside the caller's transaction (`settlement.Sql`)."""
        if self._lines:
            sql.run_many(_UPSERT, self.rows())


def pg_upsert_from(inserted: str, batch: str) -> str:
    """PostgreSQL: the data-modifying CTE body that adds to `usage_hours` the rows of `batch` (a
    relation with the ledger's columns and `hour`) whose event ids `inserted` returned."""
    units = ", ".join(f"('{unit}', b.qty_{unit}, b.cost_{unit})" for unit in UNITS)
    dimensions = ", ".join(f"coalesce(b.{name}, '')" for name in HOURLY_DIMENSIONS)
    return f"""
    INSERT INTO usage_hours ({", ".join(_KEY)}, quantity, cost_micros, events)
    SELECT b.org_id, b.hour, u.unit, {dimensions}, sum(u.quantity), sum(u.cost), count(*)
    FROM {inserted} JOIN {batch} AS b USING (event_id)
    CROSS JOIN LATERAL (VALUES {units}) AS u (unit, quantity, cost)
    WHERE u.quantity IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT ({", ".join(_KEY)}) DO UPDATE SET
        quantity = usage_hours.quantity + EXCLUDED.quantity,
        cost_micros = usage_hours.cost_micros + EXCLUDED.cost_micros,
        events = usage_hours.events + EXCLUDED.events"""
