"""An organisation's usage summed over a time range, by unit and any of `HOURLY_DIMENSIONS`, and
optionally by calendar day in a time zone: what usage reports and invoices read.

The sums come from `usage_hours`, never from a scan of the events, except for the hours that a
boundary cuts: a `start` or `end` inside an hour, or a local midnight inside an hour (hours are
written in the organisation's zone, so that happens only after it changed zones). Those hours are
read from the events, as are the hours overlapping them (two zones' hours overlap), so every event
in the range is counted exactly once, whatever the boundaries.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, func, or_, select
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
        self._org_id = org_id
        self._start = start
        self._end = end
        self._by = by
        self._where = where
        self._days = days
        self._day_of_hour: dict[datetime, str] = {}
        self.totals: Totals = {}

    def read(self) -> Totals:
        if self._start is not None and self._end is not None and self._start >= self._end:
            return {}
        from_events = self._by_day() if self._days is not None else self._in_range()
        for start, end in self._windows(from_events):
            self._add_events(start, end)
        return self.totals

    def _in_range(self) -> set[datetime]:
        """Sum the whole hours in range; return the hours to read from the events instead."""
        cut = self._hours_cut_by_the_range()
        from_events = _closure(cut, self._stored_hours_overlapping)
        keys = [*(getattr(UsageHour, name) for name in self._by), UsageHour.unit]
        query = select(*keys, *_SUMS).where(*self._conditions())
        if self._start is not None:
            query = query.where(UsageHour.hour_start >= self._start)
        if self._end is not None:
            query = query.where(UsageHour.hour_start <= self._end - HOUR)
        if from_events:
            query = query.where(UsageHour.hour_start.not_in(from_events))
        for *values, unit, quantity, cost, events in self._session.execute(query.group_by(*keys)):
            self._add((*(value or None for value in values), unit), quantity, cost, events)
        return from_events

    def _by_day(self) -> set[datetime]:
        """Sum the whole hours in range per local day; return the hours to read from the events."""
        keys = [UsageHour.hour_start, *(getattr(UsageHour, name) for name in self._by), UsageHour.unit]
        query = select(*keys, *_SUMS).where(*self._conditions(), *self._hours()).group_by(*keys)
        rows = self._session.execute(query).all()
        stored = sorted({row[0] for row in rows})
        cut = {hour for hour in stored if not self._whole(hour)}
        from_events = _closure(
            cut, lambda start, end: stored[bisect_right(stored, start - HOUR) : bisect_left(stored, end)]
        )
        for hour, *values, unit, quantity, cost, events in rows:
            if hour not in from_events:
                self._add(
                    (*(value or None for value in values), unit, self._day(hour)), quantity, cost, events
                )
        return from_events

    def _conditions(self) -> list[ColumnElement[bool]]:
        return [
            UsageHour.org_id == self._org_id,
            *(getattr(UsageHour, k) == v for k, v in self._where.items()),
        ]

    def _hours(self) -> list[ColumnElement[bool]]:
        """The stored hours that overlap the range."""
        conditions = []
        if self._start is not None:
            conditions.append(UsageHour.hour_start > self._start - HOUR)
        if self._end is not None:
            conditions.append(UsageHour.hour_start < self._end)
        return conditions

    def _hours_cut_by_the_range(self) -> set[datetime]:
        cuts = [at for at in (self._start, self._end) if at is not None]
        if not cuts:
            return set()
        around = or_(*(and_(UsageHour.hour_start > at - HOUR, UsageHour.hour_start < at) for at in cuts))
        query = select(UsageHour.hour_start).distinct().where(UsageHour.org_id == self._org_id, around)
        return set(self._session.scalars(query))

    def _stored_hours_overlapping(self, start: datetime, end: datetime) -> Iterable[datetime]:
        query = (
            select(UsageHour.hour_start)
            .distinct()
            .where(
                UsageHour.org_id == self._org_id,
                UsageHour.hour_start > start - HOUR,
                UsageHour.hour_start < end,
            )
        )
        return self._session.scalars(query)

    def _whole(self, hour: datetime) -> bool:
        """Whether the hour lies in the range and in one local day."""
        if self._start is not None and hour < self._start:
            return False
        if self._end is not None and hour + HOUR > self._end:
            return False
        midnight = self._next_midnight(hour)
        return not hour < midnight < hour + HOUR

    def _next_midnight(self, at: datetime) -> datetime:
        assert self._days is not None
        tomorrow = at.astimezone(self._days).date() + timedelta(days=1)
        return datetime.combine(tomorrow, time(), tzinfo=self._days).astimezone(UTC)

    def _day(self, hour: datetime) -> str:
        day = self._day_of_hour.get(hour)
        if day is None:
            assert self._days is not None
            day = self._day_of_hour[hour] = hour.astimezone(self._days).date().isoformat()
        return day

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
            while (midnight := self._next_midnight(start)) < end:
                days.append((start, midnight))
                start = midnight
            days.append((start, end))
        return days

    def _add_events(self, start: datetime, end: datetime) -> None:
        conditions = [UsageRecord.org_id == self._org_id, UsageRecord.occurred_at >= start]
        conditions.append(UsageRecord.occurred_at < end)
        conditions.extend(getattr(UsageRecord, k) == v for k, v in self._where.items())
        lines = usage_lines(*conditions)
        columns = [lines.c[name] for name in self._by]
        query = select(
            *columns, lines.c.unit, func.sum(lines.c.quantity), func.sum(lines.c.cost_micros), func.count()
        )
        day = (self._day(start),) if self._days is not None else ()
        for *values, unit, quantity, cost, events in self._session.execute(
            query.group_by(*columns, lines.c.unit)
        ):
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
