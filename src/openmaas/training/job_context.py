"""Training's view of a `train` job: the `TrainingContext` a trainer runs with inside the job
process. Metrics become job events; checkpoints are files in the job's folder of the artifact
store (`jobs/<id>/checkpoints/`), from which a later attempt resumes.

Metrics of fast epochs are written in groups, at most `flush_s` apart (the first at once, and
always together with a checkpoint or at `flush()`), so that a run of thousands of short epochs
does not pay a database transaction per epoch.
"""

from __future__ import annotations

import math
import time
from typing import Any

from openmaas.jobs.run import JobRun, PendingEvent
from openmaas.training.checkpoint import State
from openmaas.training.context import CheckpointFolder


class JobTrainingContext:
    def __init__(self, run: JobRun[Any], total_epochs: int, flush_s: float = 1.0) -> None:
        self._run = run
        self._total = total_epochs
        self._flush_s = flush_s
        self._pending: list[PendingEvent] = []
        self._flushed_at = -math.inf
        self._checkpoints = CheckpointFolder(run.store, f"{run.store.job_dir(run.job_id)}/checkpoints")
        self.resumed_from: int | None = None

    def flush(self) -> None:
        """Write the metrics not written yet."""
        if self._pending:
            self._run.write_events(self._pending)
            self._pending = []
        self._flushed_at = time.monotonic()

    def report(self, metrics: dict[str, Any]) -> None:
        epoch = int(metrics.get("epoch", 0))
        shown = " · ".join(
            f"{key} {value:.4g}"
            for key, value in metrics.items()
            if key not in ("epoch", "seconds") and isinstance(value, int | float)
        )
        data = {**metrics, "total_epochs": self._total}
        now = self._run.clock.now()
        self._pending.append(PendingEvent("metrics", f"epoch {epoch}/{self._total} · {shown}", data, now))
        if time.monotonic() - self._flushed_at >= self._flush_s:
            self.flush()

    def save_checkpoint(self, state: State) -> None:
        step = int(state.get("epoch", 0))
        self._checkpoints.save(state, step)
        message = f"Checkpoint saved after epoch {step}."
        # A trainer that counts steps and keeps its epoch's metrics in the state gets them listed
        # with the checkpoint (fine-tuning's `checkpoints.list`).
        data: dict[str, Any] = {"epoch": step}
        data.update({key: state[key] for key in ("step", "metrics") if key in state})
        self._pending.append(PendingEvent("checkpoint", message, data, self._run.clock.now()))
        self.flush()

    def latest_checkpoint(self) -> State | None:
        state = self._checkpoints.latest()
        if state is not None and self.resumed_from is None:
            self.resumed_from = int(state.get("epoch", 0))
            self._run.event(
                "log",
                f"Resuming from the checkpoint of epoch {self.resumed_from}.",
                {"resumed_from_epoch": self.resumed_from},
            )
        return state

    def should_stop(self) -> bool:
        return self._run.should_stop()
