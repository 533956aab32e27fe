"""Measuring a model and judging a result against its parent: file size, latency p50 at batch 1
and batch 32 (a fixed number of timed calls after warm-up, one thread), the test-set metric and
its change, and the rule that refuses a result whose metric drops more than a threshold.
"""

from __future__ import annotations

import math
import statistics
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmaas import errors
from openmaas.tasks import Task

WARMUP_CALLS = 5
TIMED_CALLS = 30
LATENCY_BATCHES = (1, 32)
# The metric each task is judged by, and whether higher is better.
PRIMARY_METRIC: dict[str, tuple[str, bool]] = {
    Task.TABULAR_CLASSIFICATION: ("accuracy", True),
    Task.TABULAR_REGRESSION: ("r2", True),
    Task.TEXT_CLASSIFICATION: ("accuracy", True),
    Task.IMAGE_CLASSIFICATION: ("accuracy", True),
    Task.AUDIO_CLASSIFICATION: ("accuracy", True),
}


def p50_ms(call: Callable[[], Any], *, warmup: int = WARMUP_CALLS, timed: int = TIMED_CALLS) -> float:
    """The median wall time of `call` in milliseconds, over `timed` calls after `warmup` calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(timed):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000.0


def file_sizes(path: Path) -> dict[str, int]:
    """Bytes on disk, and zlib-compressed (sparse weights compress, dense files do not shrink)."""
    data = path.read_bytes()
    return {"bytes": len(data), "compressed_bytes": len(zlib.compress(data, 6))}


@dataclass(frozen=True)
class Verdict:
    metric: str
    parent: float
    result: float
    change: float  # result - parent, in the metric's own units
    drop: float  # how much worse the result is (0 when it is as good or better)
    accepted: bool
    forced: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "parent": self.parent,
            "result": self.result,
            "change": self.change,
            "drop": self.drop,
            "accepted": self.accepted,
            "forced": self.forced,
        }


def judge(
    task: str, parent: dict[str, Any], result: dict[str, Any], *, max_drop: float, force: bool
) -> Verdict:
    """Compare the primary metric of a result with its parent's; `accepted` unless it dropped
    more than `max_drop` (absolute) and the request did not force it."""
    name, higher_is_better = PRIMARY_METRIC[task]
    before, after = _finite(parent.get(name)), _finite(result.get(name))
    if before is None or after is None:
        raise errors.ValidationFailed(
            f"{name} is undefined on this model's test split (too few rows?), so the result cannot be "
            "judged against its parent",
            param="model",
            code="metric_unavailable",
        )
    change = after - before
    drop = max(0.0, -change if higher_is_better else change)
    within = drop <= max_drop + 1e-12
    return Verdict(name, before, after, change, drop, accepted=within or force, forced=force and not within)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def finite_json(value: Any) -> Any:
    """`value` with NaN and infinities as null: JSON (and PostgreSQL) has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def refuse(verdict: Verdict, max_drop: float) -> errors.ValidationFailed:
    return errors.ValidationFailed(
        f"the optimised model's {verdict.metric} is {verdict.result:.4f} against its parent's "
        f"{verdict.parent:.4f}: a drop of {verdict.drop:.4f}, more than the allowed {max_drop:.4f}; "
        "no version was registered (pass force=true to keep it anyway)",
        param="max_metric_drop",
        code="metric_drop",
    )


def latency_notes(parent: dict[str, float], result: dict[str, float]) -> list[str]:
    """Plain statements of where the result is slower than its parent (measured, not assumed)."""
    notes = []
    for key, before in parent.items():
        after = result.get(key)
        if after is not None and after > before * 1.05:
            notes.append(f"{key}: {after:.3f} ms, slower than the parent's {before:.3f} ms")
    return notes
