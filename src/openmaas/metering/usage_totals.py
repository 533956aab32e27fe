"""An organisation's usage summed over a time range, by unit and any of `HOURLY_DIMENSIONS`, and
optionally by calendar day in a time zone: what usage reports and invoices read.

The sums come from `usage_hours`, grouped in the database one day at a time, never from a scan of
the events, except for the hours that a boundary cuts: a `start` or `end` inside an hour, or,
summing by day, an hour not aligned with the zone's hours (which may hold a local midnight: hours
are written in the organisation's zone, so that happens only after it changed zones). Those hours
are read from the events, as are the hours overlapping them (two zones' hours overlap), so every
event in the range is counted exactly once, whatever the boundaries.

By day, the days are read from `usage_days` where they can be (`_DayReader`): a stored day that is
a whole day of the zone reported in and inside the range, and that no other stored day overlaps
(an organisation that changed zones); the rest of the range is summed from the hours as above.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select, type_coerce, union_all
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from openmaas.metering.hourly import day_bounds
from openmaas.metering.tables import HOURLY_DIMENSIONS, UsageDay, UsageHour, UsageRecord, usage_lines

HOUR = timedelta(hours=1)
# Days grouped per statement on SQLite (it takes at most 500 parts in one UNION).
_DAYS_PER_STATEMENT = 62

# (*values of `by`, unit[, day]) → [quantity, cost in micros, events]
Totals = dict[tuple[Any, ...], list[int]]
# Stored hours summed together: (the day's label or None, first hour, last hour; None: no bound)
_Group = tuple[str | None, datetime | None, datetime | None]


def usage_totals(
    session: Session,
    org_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    by: Sequence[str] = (),
    where: Mapping[str, str] | None = None,
    days: ZoneInfo | None = None,
    daily: bool = True,
) -> Totals:
    """`org_id`'s usage in [start, end) summed by `by` (dimensions) and unit, and with `days` by
    the calendar day (`YYYY-MM-DD`) of that zone; `where` keeps only usage whose dimensions have
    these values. Dimensions without a value are None. `daily=False` sums days from the hours
    only (the daily sums' exactness tests compare both)."""
    unknown = (set(by) | set(where or ())) - set(HOURLY_DIMENSIONS)
    if unknown:
        raise ValueError(f"not a usage dimension: {sorted(unknown)}")
    where = dict(where or {})
    if "" in where.values():  # no usage has '' as a value ('' stands for none in usage_hours)
        return {}
    if start is not None and end is not None and start >= end:
        return {}
    if days is not None and daily:
        return _DayReader(session, org_id, start, end, tuple(by), where, days).read()
    return _Reader(session, org_id, start, end, tuple(by), where, days).read()


# The longest day a zone may have (a day skipped or repeated at the date line, plus summer time).
_LONGEST_DAY = timedelta(hours=50)


class _DayReader:
    """By day: whole days from `usage_days`, the rest of the range (`_Reader`) from the hours."""

    def __init__(
        self,
        session: Session,
        org_id: str,
        start: datetime | None,
        end: datetime | None,
        by: tuple[str, ...],
        where: dict[str, str],
        days: ZoneInfo,
    ) -> None:
        self._session = session
        self._org_id = org_id
        self._start = start
        self._end = end
        self._by = by
        self._where = where
        self._days = days

    def read(self) -> Totals:
        stored = self._stored_days()
        usable = self._usable(stored)
        totals: Totals = {}
        n = len(self._by)
        for (day_start, day_end), rows in stored.items():
            if (day_start, day_end) not in usable:
                continue
            label = day_start.astimezone(self._days).date().isoformat()
            for row in rows:
                key = (*(value or None for value in row[:n]), row[n], label)
                totals[key] = [int(row[n + 1]), int(row[n + 2]), int(row[n + 3])]
        for start, end in self._gaps(sorted(usable)):
            rest = _Reader(self._session, self._org_id, start, end, self._by, self._where, self._days).read()
            for key, (quantity, cost, events) in rest.items():
                total = totals.setdefault(key, [0, 0, 0])
                total[0] += quantity
                total[1] += cost
                total[2] += events
        return totals

    def _stored_days(self) -> dict[tuple[datetime, datetime], list[Sequence[Any]]]:
        """The stored days that overlap the range, each with its sums by `by` and unit."""
        keys: list[Any] = [*(getattr(UsageDay, name) for name in self._by), UsageDay.unit]
        conditions = [UsageDay.org_id == self._org_id]
        conditions += [getattr(UsageDay, name) == value for name, value in self._where.items()]
        if self._start is not None:
            conditions += [UsageDay.day_start > self._start - _LONGEST_DAY, UsageDay.day_end > self._start]
        if self._end is not None:
            conditions.append(UsageDay.day_start < self._end)
        sums = (func.sum(UsageDay.quantity), func.sum(UsageDay.cost_micros), func.sum(UsageDay.events))
        # The bounds as the driver gives them, each distinct value converted once (not per row).
        bounds = (type_coerce(UsageDay.day_start, NullType()), type_coerce(UsageDay.day_end, NullType()))
        query = select(*bounds, *keys, *sums).where(*conditions).group_by(*bounds, *keys)
        stored: dict[tuple[datetime, datetime], list[Sequence[Any]]] = {}
        by_raw: dict[tuple[Any, Any], list[Sequence[Any]]] = {}
        for day_start, day_end, *row in self._session.connection().execute(query):
            rows = by_raw.get((day_start, day_end))
            if rows is None:
                rows = by_raw[(day_start, day_end)] = stored.setdefault(
                    (_time(day_start), _time(day_end)), []
                )
            rows.append(row)
        return stored

    def _usable(self, stored: Mapping[tuple[datetime, datetime], Any]) -> set[tuple[datetime, datetime]]:
        """The stored days that are whole days of the zone inside the range, overlapped by no
        other stored day: they hold exactly the range's usage of that day."""
        days = sorted(stored)
        usable = set()
        reach: datetime | None = None  # the latest end of the days before
        for i, (start, end) in enumerate(days):
            overlapped = (reach is not None and reach > start) or (i + 1 < len(days) and days[i + 1][0] < end)
            reach = end if reach is None else max(reach, end)
            if overlapped or (self._start is not None and start < self._start):
                continue
            if (self._end is not None and end > self._end) or day_bounds(start, self._days) != (start, end):
                continue
            usable.add((start, end))
        return usable

    def _gaps(self, usable: list[tuple[datetime, datetime]]) -> list[tuple[datetime | None, datetime | None]]:
        """The parts of the range outside the usable days."""
        gaps: list[tuple[datetime | None, datetime | None]] = []
        at: datetime | None = self._start
        for start, end in usable:
            if at is None or at < start:
                gaps.append((at, start))
            at = end
        if not usable:
            return [(self._start, self._end)]
        if self._end is None or (at is not None and at < self._end):
            gaps.append((at, self._end))
        return gaps


class _Reader:
    def __init__(
        self,
        session: Session,
        org_id: str,
        start: datetime | None,
        end: datetime | None,
        by: tuple[str, ...],
        where: dict[str, str],
        days: ZoneInfo | None,
    ) -> None:
        self._session = session
        self._sqlite = session.get_bind().dialect.name == "sqlite"
        self._org_id = org_id
        self._start = start
        self._end = end
        self._by = by
        self._where = where
        self._days = days
        self.totals: Totals = {}

    def read(self) -> Totals:
        if self._days is None and not self._sqlite:  # one grouped query over the range
            from_events = _closure(self._cut_at_bounds(), self._hours_overlapping)
            groups: list[_Group] = [(None, None, None)]
        else:
            stored = self._stored_hours()
            from_events = _closure({hour for hour in stored if self._cut(hour)}, _overlapping_in(stored))
            groups = self._days_of(stored, from_events)
        step = _DAYS_PER_STATEMENT if self._sqlite else max(len(groups), 1)
        for at in range(0, len(groups), step):
            self._add_hours(groups[at : at + step], from_events)
        for start, end in self._windows(from_events):
            self._add_events(start, end)
        return self.totals

    def _stored_hours(self) -> list[datetime]:
        """The distinct stored hours that overlap the range, in order: one index seek per hour (a
        loose index scan), not a read of every row."""
        org = UsageHour.org_id == self._org_id
        after = [] if self._start is None else [UsageHour.hour_start > self._start - HOUR]
        before = [] if self._end is None else [UsageHour.hour_start < self._end]
        first = select(func.min(UsageHour.hour_start).label("hour")).where(org, *after, *before)
        hours = first.cte("hours", recursive=True)
        following = select(func.min(UsageHour.hour_start)).where(
            org, UsageHour.hour_start > hours.c.hour, *before
        )
        hours = hours.union_all(select(following.scalar_subquery()).where(hours.c.hour.is_not(None)))
        found = self._session.scalars(select(hours.c.hour).where(hours.c.hour.is_not(None)))
        return [_utc(hour) for hour in found]

    def _cut(self, hour: datetime) -> bool:
        """Whether a boundary cuts the stored hour: `start` or `end` falls inside, or, by day, it is
        not on the zone's hours (a local midnight may fall inside)."""
        start, end = self._start, self._end
        if (start is not None and hour < start) or (end is not None and hour + HOUR > end):
            return True
        if self._days is None:
            return False
        local = hour.astimezone(self._days)
        return bool(local.minute or local.second)

    def _cut_at_bounds(self) -> set[datetime]:
        """Stored hours across `start` or `end`."""
        cut = [
            and_(UsageHour.hour_start > at - HOUR, UsageHour.hour_start < at)
            for at in (self._start, self._end)
            if at is not None
        ]
        if not cut:
            return set()
        query = select(UsageHour.hour_start).distinct().where(UsageHour.org_id == self._org_id, or_(*cut))
        return {_utc(hour) for hour in self._session.scalars(query)}

    def _hours_overlapping(self, start: datetime, end: datetime) -> Iterable[datetime]:
        query = select(UsageHour.hour_start).distinct()
        query = query.where(UsageHour.org_id == self._org_id, UsageHour.hour_start > start - HOUR)
        return (_utc(hour) for hour in self._session.scalars(query.where(UsageHour.hour_start < end)))

    def _days_of(self, stored: list[datetime], from_events: set[datetime]) -> list[_Group]:
        """The stored hours to sum, by local day (by UTC day when not summing by day), as each
        day's first and last hour."""
        zone = self._days or UTC
        days: dict[str, list[datetime]] = {}
        for hour in stored:
            if hour not in from_events:
                days.setdefault(hour.astimezone(zone).date().isoformat(), []).append(hour)
        return [(day if self._days is not None else None, hours[0], hours[-1]) for day, hours in days.items()]

    def _add_hours(self, groups: list[_Group], from_events: set[datetime]) -> None:
        """Sum the stored hours of each group (label, first and last hour; None: the range's end),
        but those read from the events.

        SQLite sorts to group: one grouped query per day (in one statement) sorts a day's rows,
        which takes half the time of sorting a month's. PostgreSQL hashes: one query, with a day's
        number found by binary search among the days' first hours (`width_bucket`)."""
        keys: list[Any] = [*(getattr(UsageHour, name) for name in self._by), UsageHour.unit]
        where = [UsageHour.org_id == self._org_id]
        where += [getattr(UsageHour, name) == value for name, value in self._where.items()]

        def grouped(first: datetime | None, last: datetime | None, *day: Any) -> Select[Any]:
            # Only one bound on each side: SQLite ranges over the index with the first it finds.
            conditions = [*where, *self._in_range(first, last)]
            skipped = [h for h in from_events if (first is None or first < h) and (last is None or h < last)]
            if skipped:
                conditions.append(UsageHour.hour_start.not_in(skipped))
            return select(*keys, *day, *_SUMS).where(*conditions).group_by(*keys, *day)

        n = len(self._by) + 1
        rows: Iterable[Sequence[Any]]
        if self._sqlite:
            parts = [grouped(f, t, *([] if d is None else [literal(d).label("day")])) for d, f, t in groups]
            rows = self._session.connection().execute(union_all(*parts))
        elif self._days is None:
            rows = self._session.connection().execute(grouped(groups[0][1], groups[-1][2]))
        else:
            starts = array([literal(first, UsageHour.hour_start.type) for _, first, _ in groups])
            day = func.width_bucket(UsageHour.hour_start, starts)
            found = self._session.connection().execute(grouped(groups[0][1], groups[-1][2], day))
            rows = ((*row[:n], groups[row[n] - 1][0], *row[n + 1 :]) for row in found)
        for row in rows:
            self._add((*(value or None for value in row[: n - 1]), *row[n - 1 : -3]), *row[-3:])

    def _in_range(self, first: datetime | None, last: datetime | None) -> list[ColumnElement[bool]]:
        """Stored hours from `first` to `last`, by default those wholly in the range."""
        first = first or self._start
        last = last or (None if self._end is None else self._end - HOUR)
        conditions = []
        if first is not None:
            conditions.append(UsageHour.hour_start >= first)
        if last is not None:
            conditions.append(UsageHour.hour_start <= last)
        return conditions

    def _windows(self, hours: set[datetime]) -> list[tuple[datetime, datetime]]:
        """The time ranges to read from the events: `hours` merged, clipped to the range, and cut at
        local midnights when summing by day."""
        windows: list[tuple[datetime, datetime]] = []
        for hour in sorted(hours):
            start, end = max(hour, self._start or hour), min(hour + HOUR, self._end or hour + HOUR)
            if start >= end:
                continue
            if windows and start <= windows[-1][1]:
                windows[-1] = (windows[-1][0], max(end, windows[-1][1]))
            else:
                windows.append((start, end))
        if self._days is None:
            return windows
        days = []
        for start, end in windows:
            while (midnight := _next_midnight(start, self._days)) < end:
                days.append((start, midnight))
                start = midnight
            days.append((start, end))
        return days

    def _add_events(self, start: datetime, end: datetime) -> None:
        conditions = [UsageRecord.org_id == self._org_id, UsageRecord.occurred_at >= start]
        conditions.append(UsageRecord.occurred_at < end)
        conditions.extend(getattr(UsageRecord, k) == v for k, v in self._where.items())
        lines = usage_lines(*conditions)
        keys = [*(lines.c[name] for name in self._by), lines.c.unit]
        sums = (func.sum(lines.c.quantity), func.sum(lines.c.cost_micros), func.count())
        day = (start.astimezone(self._days).date().isoformat(),) if self._days is not None else ()
        rows = self._session.execute(select(*keys, *sums).group_by(*keys))
        for *values, unit, quantity, cost, events in rows:
            self._add((*(value or None for value in values), unit, *day), quantity, cost, events)

    def _add(self, key: tuple[Any, ...], quantity: int, cost: int, events: int) -> None:
        total = self.totals.get(key)
        if total is None:
            self.totals[key] = [int(quantity), int(cost), int(events)]
        else:
            total[0] += int(quantity)
            total[1] += int(cost)
            total[2] += int(events)


_SUMS = (func.sum(UsageHour.quantity), func.sum(UsageHour.cost_micros), func.sum(UsageHour.events))


def _next_midnight(at: datetime, zone: ZoneInfo) -> datetime:
    tomorrow = at.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(), tzinfo=zone).astimezone(UTC)


def _time(raw: Any) -> datetime:
    """A stored time as the driver returns it untyped (SQLite: text) → aware UTC."""
    return _utc(raw if isinstance(raw, datetime) else datetime.fromisoformat(raw))


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _closure(
    seed: set[datetime], overlapping: Callable[[datetime, datetime], Iterable[datetime]]
) -> set[datetime]:
    """`seed` and every stored hour that overlaps one of them, and so on: hours of two zones'
    grids overlap, and an event must be read from one place only."""
    found = set(seed)
    todo = list(seed)
    while todo:
        hour = todo.pop()
        for other in overlapping(hour, hour + HOUR):
            if other not in found:
                found.add(other)
                todo.append(other)
    return found


def _overlapping_in(stored: list[datetime]) -> Callable[[datetime, datetime], Iterable[datetime]]:
    """The hours of `stored` (in order) that overlap a time range."""

    def overlapping(start: datetime, end: datetime) -> Iterable[datetime]:
        return stored[bisect_right(stored, start - HOUR) : bisect_left(stored, end)]

    return overlapping
