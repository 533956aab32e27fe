"""A short, bounded history of each loaded deployment's load, for the console's charts: every
`interval_s` (10 s) one sample per deployment of its queue depth, its requests in flight and the
latency of the requests that finished since the previous sample, kept for `window_s` (an hour).

It reads the counters the replicas already keep for `/metrics` (the batcher's queue and its
queue-wait and batch-time histograms; an LLM engine's waiting and running sequences and its
time-to-first-token histogram), in a thread of its own: nothing is added to the request path and
nothing is written to the database. Memory is bounded: `window_s / interval_s` samples for each
deployment this server has loaded; a deployment's history goes when it is unloaded.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from openmaas.clock import Clock
from openmaas.engine.async_engine import AsyncLLMEngine
from openmaas.histogram import Histogram
from openmaas.serving.directory import ServedModel, ServedModels

log = logging.getLogger("openmaas.serving")

BATCH = "batch"  # trained models behind a batcher: latency is the queue wait and the batch run
LLM = "llm"  # generative models: latency is the time to the first token


class _Counted(Protocol):
    bounds: tuple[float, ...]
    counts: list[int]


@dataclass(frozen=True, slots=True)
class Sample:
    """One deployment's load at `at` (Unix seconds); latencies in milliseconds over the requests
    that finished in the interval before it (None when none did)."""

    at: float
    queued: int
    in_flight: int
    requests: int
    wait_p95_ms: float | None  # queue wait (batch models only)
    p50_ms: float | None  # batch run (batch models) or time to first token (LLMs)
    p95_ms: float | None


@dataclass
class _History:
    kind: str
    samples: deque[Sample]
    # The counts each histogram held at the previous sample, to read the interval's share.
    seen: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Series:
    """A deployment's samples as columns, oldest first (what the console draws)."""

    kind: str | None
    interval_s: float
    at: list[float]
    queued: list[int]
    in_flight: list[int]
    requests: list[int]
    wait_p95_ms: list[float | None]
    p50_ms: list[float | None]
    p95_ms: list[float | None]


class DeploymentMetrics:
    def __init__(
        self, served: ServedModels, clock: Clock, *, interval_s: float = 10.0, window_s: float = 3600.0
    ) -> None:
        self.interval_s = interval_s
        self.max_samples = max(1, int(window_s // interval_s))
        self._served = served
        self._clock = clock
        self._lock = threading.Lock()
        self._histories: dict[tuple[str, str], _History] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one sample of every loaded deployment; forget those no longer loaded."""
        at = self._clock.now().timestamp()
        entries = self._served.all()
        with self._lock:
            live = {(e.org_id, e.name) for e in entries}
            for gone in [key for key in self._histories if key not in live]:
                del self._histories[gone]
            for entry in entries:
                self._sample_one(entry, at)

    def series(self, org_id: str, name: str) -> Series:
        with self._lock:
            history = self._histories.get((org_id, name))
            samples = list(history.samples) if history else []
        return Series(
            kind=history.kind if history else None,
            interval_s=self.interval_s,
            at=[s.at for s in samples],
            queued=[s.queued for s in samples],
            in_flight=[s.in_flight for s in samples],
            requests=[s.requests for s in samples],
            wait_p95_ms=[s.wait_p95_ms for s in samples],
            p50_ms=[s.p50_ms for s in samples],
            p95_ms=[s.p95_ms for s in samples],
        )

    def start(self) -> None:
        """Sample every `interval_s` in a daemon thread."""
        if self._thread is not None or self.interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="deployment-metrics", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:  # a chart's gap, never a dead thread
                log.exception("sampling deployment metrics failed")

    def _sample_one(self, entry: ServedModel, at: float) -> None:
        versions = [(m.version_id, m.runtime) for m in entry.routes or (entry,) if m.runtime is not None]
        runtimes = [runtime for _, runtime in versions]
        kind = LLM if any(isinstance(getattr(r, "engine", None), AsyncLLMEngine) for r in runtimes) else BATCH
        history = self._histories.get((entry.org_id, entry.name))
        if history is None or history.kind != kind:
            history = _History(kind, deque(maxlen=self.max_samples))
            self._histories[(entry.org_id, entry.name)] = history
        queued = in_flight = 0
        waits: list[_Counted] = []
        runs: list[_Counted] = []
        for version, runtime in versions:
            front = getattr(runtime, "engine", None)
            if isinstance(front, AsyncLLMEngine):
                stats = front.stats()
                queued += stats.num_waiting
                in_flight += stats.num_running + stats.num_waiting
                runs.append(_Tagged(f"{version}:ttft", front.engine.time_to_first_token))
                continue
            batcher = getattr(runtime, "batcher", None)
            in_flight += int(getattr(runtime, "in_flight", 0) or 0)
            if batcher is not None:
                queued += batcher.queued
                waits.append(_Tagged(f"{version}:wait", batcher.stats.queue_seconds))
                runs.append(_Tagged(f"{version}:run", batcher.stats.batch_seconds))
            else:  # a runtime whose queue lives elsewhere (Ray replicas) may say how many wait here
                queued += int(getattr(runtime, "queued", 0) or 0)
        wait = _interval(history.seen, waits)
        run = _interval(history.seen, runs)
        history.samples.append(
            Sample(
                at=at,
                queued=queued,
                in_flight=in_flight,
                requests=sum(run) if run else 0,
                wait_p95_ms=_quantile_ms(waits, wait, 0.95),
                p50_ms=_quantile_ms(runs, run, 0.50),
                p95_ms=_quantile_ms(runs, run, 0.95),
            )
        )


class _Tagged:
    """A histogram and the name its previous counts are kept under (per runtime, per measure)."""

    __slots__ = ("bounds", "counts", "tag")

    def __init__(self, tag: str, histogram: Histogram) -> None:
        self.tag = tag
        self.bounds = histogram.bounds
        self.counts = list(histogram.counts)  # a copy: the replica's thread goes on counting


def _interval(seen: dict[str, list[int]], histograms: list[Any]) -> list[int] | None:
    """The bucket counts observed since the previous sample, summed over `histograms` (which share
    their bounds); a histogram whose counts went down was replaced (a reload) and counts whole."""
    if not histograms:
        return None
    total = [0] * len(histograms[0].counts)
    for h in histograms:
        before = seen.get(h.tag)
        if before is None or len(before) != len(h.counts) or _went_down(before, h.counts):
            before = [0] * len(h.counts)
        for i, (now, then) in enumerate(zip(h.counts, before, strict=True)):
            total[i] += now - then
        seen[h.tag] = h.counts
    return total


def _went_down(before: list[int], now: list[int]) -> bool:
    return any(b > c for b, c in zip(before, now, strict=True))


def _quantile_ms(histograms: list[Any], counts: list[int] | None, q: float) -> float | None:
    """The `q` quantile of the interval's observations, interpolated within its bucket as
    Prometheus' `histogram_quantile` does; the top bucket answers with the highest bound."""
    if not histograms or not counts or sum(counts) == 0:
        return None
    bounds: tuple[float, ...] = histograms[0].bounds
    rank = q * sum(counts)
    running = 0
    cumulative = []
    for c in counts:
        running += c
        cumulative.append(running)
    bucket = bisect_left(cumulative, rank)
    if bucket >= len(bounds):
        return bounds[-1] * 1000
    lower = bounds[bucket - 1] if bucket > 0 else 0.0
    below = cumulative[bucket - 1] if bucket > 0 else 0
    inside = counts[bucket]
    fraction = (rank - below) / inside if inside else 1.0
    return (lower + (bounds[bucket] - lower) * fraction) * 1000
