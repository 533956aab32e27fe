"""What a job handler sees while it runs in its subprocess: the job's typed parameters, events,
the stop flag, the artifact store, and a fenced `succeed` that commits the result in the same
transaction as whatever the handler registered.

A handler that stops before finishing (asked to, or its lease lost) raises `JobStopped`; the
worker then settles the job (cancelled, paused, or back to the queue). Nothing here knows any
kind of job: their handlers come from the composition root (see `handlers.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session

from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.jobs import events, queue
from openmaas.jobs.executor import Resources
from openmaas.jobs.tables import JobStatus
from openmaas.storage import ArtifactStore

P = TypeVar("P", bound=BaseModel)


class JobStopped(Exception):
    """The attempt stopped before finishing: it was asked to (cancel, pause, shutdown, its worker
    gone) or lost its lease. A later attempt resumes from what it saved (its checkpoints)."""


class LeaseLost(JobStopped):
    """The job was taken from this attempt (its lease expired, or it was cancelled)."""


class JobRun(Generic[P]):
    def __init__(
        self,
        *,
        db: Database,
        store: ArtifactStore,
        clock: Clock,
        claim: queue.Claim,
        params: P,
        stop_requested: Callable[[], bool],
        on_resources: Callable[[Resources], None] | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.clock = clock
        self.claim = claim
        self.params = params
        self._stop_requested = stop_requested
        self._on_resources = on_resources

    @property
    def job_id(self) -> str:
        return self.claim.job_id

    @property
    def org_id(self) -> str:
        return self.claim.org_id

    def should_stop(self) -> bool:
        return self._stop_requested()

    def holds(self, resources: Resources) -> None:
        """Tell the executor what the attempt now holds beyond its own process (workers on a
        cluster), so that its compute is metered as such."""
        if self._on_resources is not None:
            self._on_resources(resources)

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


@dataclass(frozen=True, slots=True)
class PendingEvent:
    type: str
    message: str
    data: dict[str, Any] | None
    at: datetime
    level: str = "info"


def _finite(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """JSON has no NaN or infinity (PostgreSQL refuses them): such values become null."""
    if data is None:
        return None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}
