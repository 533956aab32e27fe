"""What a job handler sees while it runs in its subprocess: the job's parameters, events, the
stop flag, checkpoints in the artifact store, and a fenced `succeed` that commits the result in
the same transaction as whatever the handler registered.

`JobTrainingContext` is the trainers' view of it: `report`, `save_checkpoint`,
`latest_checkpoint` and `should_stop` (the `TrainingContext` protocol of `openmaas.training`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.jobs import events, queue
from openmaas.jobs.tables import JobStatus
from openmaas.storage import ArtifactStore

if TYPE_CHECKING:
    from openmaas.training.checkpoint import State


class LeaseLost(Exception):
    """The job was taken from this attempt (its lease expired, or it was cancelled)."""


class JobRun:
    def __init__(
        self,
        *,
        db: Database,
        store: ArtifactStore,
        clock: Clock,
        claim: queue.Claim,
        params: dict[str, Any],
        stop_requested: Callable[[], bool],
    ) -> None:
        self.db = db
        self.store = store
        self.clock = clock
        self.claim = claim
        self.params = params
        self._stop_requested = stop_requested

    @property
    def job_id(self) -> str:
        return self.claim.job_id

    @property
    def org_id(self) -> str:
        return self.claim.org_id

    def should_stop(self) -> bool:
        return self._stop_requested()

    def event(
        self, type_: str, message: str, data: dict[str, Any] | None = None, level: str = "info"
    ) -> None:
        self.write_events([PendingEvent(type_, message, data, self.clock.now(), level)])

    def write_events(self, pending: list[PendingEvent]) -> None:
        """Append events in one transaction, in order."""
        with self.db.session() as session:
            for event in pending:
                events.append(
                    session,
                    self.job_id,
                    event.type,
                    event.message,
                    event.at,
                    _finite(event.data),
                    level=event.level,
                )

    def succeed(self, session: Session, result: dict[str, Any]) -> None:
        """End the job `succeeded` inside the caller's transaction; raises LeaseLost if not held."""
        if not queue.finish(session, self.claim, JobStatus.SUCCEEDED, now=self.clock.now(), result=result):
            raise LeaseLost(self.job_id)

    def training_context(self, total_epochs: int) -> JobTrainingContext:
        return JobTrainingContext(self, total_epochs)


@dataclass(frozen=True, slots=True)
class PendingEvent:
    type: str
    message: str
    data: dict[str, Any] | None
    at: datetime
    level: str = "info"


class JobTrainingContext:
    """The `TrainingContext` of a job: metrics become events, checkpoints go to the store.

    Metrics of fast epochs are written in groups, at most `flush_s` apart (the first at once, and
    always together with a checkpoint or at `flush()`), so that a run of thousands of short epochs
    does not pay a database transaction per epoch."""

    def __init__(self, run: JobRun, total_epochs: int, flush_s: float = 1.0) -> None:
        self._run = run
        self._total = total_epochs
        self._flush_s = flush_s
        self._pending: list[PendingEvent] = []
        self._flushed_at = -math.inf
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
        self._run.store.save_checkpoint(self._run.job_id, step, state)
        message = f"Checkpoint saved after epoch {step}."
        self._pending.append(PendingEvent("checkpoint", message, {"epoch": step}, self._run.clock.now()))
        self.flush()

    def latest_checkpoint(self) -> State | None:
        state = self._run.store.latest_checkpoint(self._run.job_id)
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


def _finite(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """JSON has no NaN or infinity (PostgreSQL refuses them): such values become null."""
    if data is None:
        return None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}
