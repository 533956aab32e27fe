"""Billing months are calendar months in the organisation's zone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from openmaas.pricing.periods import days_in_period, next_period, period_bounds, period_of


def test_february_has_28_or_29_days() -> None:
    assert days_in_period("2028-02") == 29
    assert days_in_period("2027-02") == 28
    start, end = period_bounds("2028-02", "UTC")
    assert (start, end) == (datetime(2028, 2, 1, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC))


def test_a_month_at_utc_plus_14_starts_the_previous_day_in_utc() -> None:
    start, end = period_bounds("2027-01", "Pacific/Kiritimati")
    assert start == datetime(2026, 12, 31, 10, 0, tzinfo=UTC)
    assert end == datetime(2027, 1, 31, 10, 0, tzinfo=UTC)
    assert period_of(datetime(2026, 12, 31, 10, 0, tzinfo=UTC), "Pacific/Kiritimati") == "2027-01"
    assert period_of(datetime(2026, 12, 31, 9, 59, tzinfo=UTC), "Pacific/Kiritimati") == "2026-12"


def test_periods_roll_over_the_year_and_reject_nonsense() -> None:
    assert next_period("2026-12") == "2027-01"
    with pytest.raises(ValueError, match="YYYY-MM"):
        period_bounds("2026-13", "UTC")
    with pytest.raises(ValueError, match="time zone"):
        period_of(datetime(2026, 1, 1, tzinfo=UTC), "Mars/Olympus")
