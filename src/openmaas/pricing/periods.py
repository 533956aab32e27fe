"""Billing periods: calendar months in the organisation's time zone (never "30 days")."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from openmaas.schemas.times import PERIOD_PATTERN

_PERIOD_RE = re.compile(PERIOD_PATTERN)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin'") from exc


def period_of(at: datetime, timezone: str) -> str:
    """The month (`YYYY-MM`) that the instant `at` falls in, in `timezone`."""
    local = at.astimezone(zone(timezone))
    return f"{local.year:04d}-{local.month:02d}"


def parse_period(period: str) -> tuple[int, int]:
    match = _PERIOD_RE.match(period)
    if not match:
        raise ValueError(f"expected a month as YYYY-MM, got {period!r}")
    return int(match.group(1)), int(match.group(2))


def period_bounds(period: str, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) of the month in UTC: local midnight on the 1st to local midnight on the next 1st."""
    year, month = parse_period(period)
    tz = zone(timezone)
    start = datetime(year, month, 1, tzinfo=tz)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def next_period(period: str) -> str:
    year, month = parse_period(period)
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def days_in_period(period: str) -> int:
    year, month = parse_period(period)
    start = datetime(year, month, 1)
    year2, month2 = parse_period(next_period(period))
    return (datetime(year2, month2, 1) - start).days
