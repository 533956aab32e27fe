"""An organisation's usage summed over a time range, by unit and any of `HOURLY_DIMENSIONS`, and
optionally by calendar day in a time zone: what usage reports and invoices read.

The sums come from `usage_hours`, grouped in the database (by local day too), never from a scan
of the events, except for the hours that a boundary cuts: a `start` or `end` inside an hour, or,
summing by day, an hour not aligned with the zone's hours (which may hold a local midnight: hours
are written in the organisation's zone, so that happens only after it changed zones). Those hours
are read from the events, as are the hours overlapping them (two zones' hours overlap), so every
event in the range is counted exactly once, whatever the boundaries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Date, and_, case, cast, func, literal, or_, select
from sqlalchemy.orm import Session

from openmaas.metering.tables import HOURLY_DIMENSIONS, UsageHour, UsageRecord, usage_lines

HOUR = timedelta(hours=1)

# (*values of `by`, unit[, day]) → [quantity, cost in micros, events]
Totals = dict[tuple[Any, ...], list[int]]


def usage_totals(
    session: Session,
    org_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    by: Sequence[str] = (),
    where: Mapping[str, str] | None = None,
    days: ZoneInfo | None = None,
) -> Totals:
    """`org_id`'s usage in [start, end) summed by `by` (dimensions) and unit, and with `days` by
    the calendar day (`YYYY-MM-DD`) of that zone; `where` keeps only usage whose dimensions have
    these values. Dimensions without a value are None."""
    unknown = (set(by) | set(where or ())) - set(HOURLY_DIMENSIONS)
    if unknown:
        raise ValueError(f"not a usage dimension: {sorted(unknown)}")
    where = dict(where or {})
    if "" in where.values():  # no usage has '' as a value ('' stands for none in usage_hours)
        return {}
    if start is not None and end is not None and start >= end:
        return {}
    return _Reader(session, org_id, start, end, tuple(by), where, days).read()


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
        offsets: _Offsets | None = None
        if self._days is not None:
            span = self._span()
            if span is None:
                return {}
            offsets = _Offsets(self._days, *span)
        cut = self._cut_hours(offsets)
        from_events = _closure(cut, self._hours_overlapping)
        self._add_hours(from_events, offsets)
        for start, end in self._windows(from_events):
            self._add_events(start, end)
        return self.totals

    def _span(self) -> tuple[datetime, datetime] | None:
        """The range, its open ends closed by the first and last stored hour."""
        first, last = self._start, self._end
        if first is None or last is None:
            query = select(func.min(UsageHour.hour_start), func.max(UsageHour.hour_start))
            low, high = self._session.execute(query.where(UsageHour.org_id == self._org_id)).one()
            if low is None:
                return None
            first, last = first or low, last or high + HOUR
        return first, last

    def _cut_hours(self, offsets: _Offsets | None) -> set[datetime]:
        """Stored hours that a boundary cuts: across `start` or `end`, and by day, not on the zone's
        hours (a local midnight may fall inside)."""
        cut: list[ColumnElement[bool]] = [
            and_(UsageHour.hour_start > at - HOUR, UsageHour.hour_start < at)
            for at in (self._start, self._end)
            if at is not None
        ]
        if offsets is not None:
            cut.append(and_(*self._in_range(), offsets.misaligned(UsageHour.hour_start, sqlite=self._sqlite)))
        if not cut:
            return set()
        query = select(UsageHour.hour_start).distinct().where(UsageHour.org_id == self._org_id, or_(*cut))
        return set(self._session.scalars(query))

    def _hours_overlapping(self, start: datetime, end: datetime) -> Iterable[datetime]:
        query = select(UsageHour.hour_start).distinct()
        query = query.where(UsageHour.org_id == self._org_id, UsageHour.hour_start > start - HOUR)
        return self._session.scalars(query.where(UsageHour.hour_start < end))

    def _in_range(self) -> list[ColumnElement[bool]]:
        """Stored hours wholly in the range."""
        conditions = []
        if self._start is not None:
            conditions.append(UsageHour.hour_start >= self._start)
        if self._end is not None:
            conditions.append(UsageHour.hour_start <= self._end - HOUR)
        return conditions

    def _add_hours(self, from_events: set[datetime], offsets: _Offsets | None) -> None:
        """Sum the stored hours wholly in range, but those read from the events."""
        keys: list[Any] = [*(getattr(UsageHour, name) for name in self._by), UsageHour.unit]
        grouping: list[Any] = list(keys)
        if offsets is not None:
            keys.append(offsets.day(UsageHour.hour_start, sqlite=self._sqlite).label("day"))
            grouping.append("day")
        where = (getattr(UsageHour, name) == value for name, value in self._where.items())
        query = select(*keys, *_SUMS).where(UsageHour.org_id == self._org_id, *where, *self._in_range())
        if from_events:
            query = query.where(UsageHour.hour_start.not_in(from_events))
        for row in self._session.connection().execute(query.group_by(*grouping)):
            *values, unit = row[: len(self._by) + 1]
            day = row[len(self._by) + 1 : -3]
            if day and isinstance(day[0], date):
                day = (day[0].isoformat(),)
            self._add((*(value or None for value in values), unit, *day), *row[-3:])

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


class _Offsets:
    """A zone's offsets from UTC over a time span, as SQL on an hour's start: its local day, and
    whether it is not on the zone's hours. Changes (summer time) are found by the day, then to
    the second."""

    def __init__(self, zone: ZoneInfo, start: datetime, end: datetime) -> None:
        self._zone = zone
        self.changes: list[tuple[datetime | None, int]] = [(None, self._at(int(start.timestamp())))]
        t, stop = int(start.timestamp()), int(end.timestamp())
        while t < stop:
            step = min(t + 86_400, stop)
            if self._at(step) != self.changes[-1][1]:
                before, after = t, step  # the offset changed in (before, after]
                while after - before > 1:
                    middle = (before + after) // 2
                    if self._at(middle) == self.changes[-1][1]:
                        before = middle
                    else:
                        after = middle
                self.changes.append((datetime.fromtimestamp(after, UTC), self._at(after)))
            t = step

    def _at(self, seconds: int) -> int:
        offset = datetime.fromtimestamp(seconds, UTC).astimezone(self._zone).utcoffset()
        return int(offset.total_seconds()) if offset is not None else 0

    def _by_offset(self, column: Any, value: Any) -> Any:
        """`value(offset)` of the offset in effect at `column`, as SQL."""
        if len(self.changes) == 1:
            return literal(value(self.changes[0][1]))
        ends = [since for since, _ in self.changes[1:]]
        whens = [(column < end, value(offset)) for (_, offset), end in zip(self.changes, ends, strict=False)]
        return case(*whens, else_=literal(value(self.changes[-1][1])))

    def day(self, column: Any, *, sqlite: bool) -> Any:
        if self.changes == [(None, 0)]:
            return func.substr(column, 1, 10) if sqlite else cast(column, Date)
        if sqlite:
            return func.date(column, self._by_offset(column, lambda offset: f"{offset:+d} seconds"))
        return cast(column + self._by_offset(column, lambda offset: timedelta(seconds=offset)), Date)

    def misaligned(self, column: Any, *, sqlite: bool) -> ColumnElement[bool]:
        """Whether the hour starting at `column` is not an hour of the zone (its UTC minutes and
        seconds are not the zone's)."""
        minutes = func.substr(column, 15, 5) if sqlite else func.to_char(column, "MI:SS")
        expected = self._by_offset(column, lambda offset: f"{-offset % 3600 // 60:02d}:{-offset % 60:02d}")
        return minutes != expected


def _next_midnight(at: datetime, zone: ZoneInfo) -> datetime:
    tomorrow = at.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(), tzinfo=zone).astimezone(UTC)


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
