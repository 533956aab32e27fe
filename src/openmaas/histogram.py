"""A fixed-bucket histogram that a hot loop can afford: `observe` is one bisect and two additions.

The parts that measure (the batcher's replica threads, the LLM engine's step loop, the ledger's
writer) keep one each and `/metrics` turns it into a Prometheus histogram when scraped; nothing is
formatted or locked per observation. Each histogram has one writer (a thread, or callers holding
their owner's lock); a scrape reads a copy, which may lag a concurrent observation by one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        # One count per bucket, the last for values above every bound (Prometheus' `+Inf`).
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound counts in that bucket, as Prometheus' `le` says.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> tuple[list[int], float]:
        """The count at or below each bound (then in all), and the sum: what a scrape writes."""
        counts, total = list(self.counts), self.sum
        running, out = 0, []
        for in_bucket in counts:
            running += in_bucket
            out.append(running)
        return out, total
