"""An event's hour is an hour of its organisation's local time, and a batch's hourly sums are
summed per organisation, hour, dimensions and unit."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from openmaas.metering.events import PricedLine
from openmaas.metering.hourly import HourlySums, day_bounds, hour_start


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("timezone", "at", "start"),
    [
        ("UTC", "2026-11-20 10:59:59.999999", "2026-11-20 10:00"),
        ("Europe/Berlin", "2026-11-20 11:00", "2026-11-20 11:00"),
        ("Asia/Kolkata", "2026-11-20 10:29:59", "2026-11-20 09:30"),  # UTC+5:30
        ("Asia/Kolkata", "2026-11-20 10:30", "2026-11-20 10:30"),
        ("Asia/Kathmandu", "2026-11-20 10:14", "2026-11-20 09:15"),  # UTC+5:45
        ("America/St_Johns", "2026-07-01 03:00", "2026-07-01 02:30"),  # UTC-2:30 in summer
    ],
)
def test_an_hour_is_an_hour_of_local_time(timezone: str, at: str, start: str) -> None:
    assert hour_start(_utc(at), timezone) == _utc(start)


def test_sums_merge_none_and_empty_and_come_in_key_order() -> None:
    sums = HourlySums()
    two_units = (PricedLine("requests", 1, 10, "pb_1"), PricedLine("output_tokens", 40, 80, "pb_1"))
    day = ("d1", "d2")
    sums.add(("org_b", "h1", day, "mv_1", None, None, None, "pb_1"), two_units)
    sums.add(("org_a", "h1", day, None, None, None, None, None), (PricedLine("rows", 5, 0, None),))
    sums.add(("org_b", "h1", day, "mv_1", None, None, None, "pb_1"), two_units[:1])
    sums.add(("org_a", "h1", day, "", "", "", "", ""), (PricedLine("rows", 2, 0, None),))
    sums.add(("org_a", "h2", day, "", "", "", "", ""), (PricedLine("rows", 1, 0, None),))
    hours, days = sums.rows()
    assert days == [
        ("org_a", "d1", "d2", "rows", "", "", "", "", "", 8, 0, 3),
        ("org_b", "d1", "d2", "output_tokens", "mv_1", "", "", "", "pb_1", 40, 80, 1),
        ("org_b", "d1", "d2", "requests", "mv_1", "", "", "", "pb_1", 2, 20, 2),
    ]
    assert hours == [
        ("org_a", "h1", "rows", "", "", "", "", "", 7, 0, 2),
        ("org_a", "h2", "rows", "", "", "", "", "", 1, 0, 1),
        ("org_b", "h1", "output_tokens", "mv_1", "", "", "", "pb_1", 40, 80, 1),
        ("org_b", "h1", "requests", "mv_1", "", "", "", "pb_1", 2, 20, 2),
    ]


@pytest.mark.parametrize(
    ("timezone", "at", "start", "end"),
    [
        ("UTC", "2026-11-20 23:59:59.999999", "2026-11-20 00:00", "2026-11-21 00:00"),
        ("Europe/Berlin", "2026-03-29 12:00", "2026-03-28 23:00", "2026-03-29 22:00"),  # 23 hours
        ("Europe/Berlin", "2026-10-25 12:00", "2026-10-24 22:00", "2026-10-25 23:00"),  # 25 hours
        ("Asia/Kolkata", "2026-11-20 18:29:59", "2026-11-19 18:30", "2026-11-20 18:30"),
        ("America/Havana", "2026-03-08 06:00", "2026-03-08 05:00", "2026-03-09 04:00"),  # no midnight
    ],
)
def test_a_day_is_a_local_calendar_day(timezone: str, at: str, start: str, end: str) -> None:
    assert day_bounds(_utc(at), ZoneInfo(timezone)) == (_utc(start), _utc(end))
