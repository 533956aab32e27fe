"""The histogram the hot loops keep: a value on a bound counts in that bucket (Prometheus' `le`),
larger ones in `+Inf`, and a scrape reads cumulative counts and the sum."""

from __future__ import annotations

from openmaas.histogram import Histogram


def test_buckets_are_cumulative_and_bounds_inclusive() -> None:
    histogram = Histogram((0.1, 1, 10))
    for value in (0.05, 0.1, 0.5, 1, 20):
        histogram.observe(value)
    assert histogram.cumulative() == ([2, 4, 4, 5], 21.65)
    assert histogram.count == 5
