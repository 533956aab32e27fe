"""The entry point of a job subprocess: `python -m openmaas.jobs.runner`, its `RunSpec` on stdin.

Exit status 0: the job was settled here (succeeded, or failed for a reason retrying cannot fix).
`EXIT_STOPPED`: it stopped because it was asked to (SIGTERM from the worker) or lost its lease.
Anything else: the attempt failed; the worker retries it up to `max_attempts`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from openmaas import errors
from openmaas.clock import SystemClock
from openmaas.db import models as all_tables
from openmaas.db.database import Database
from openmaas.jobs import queue
from openmaas.jobs.executor import RunSpec
from openmaas.jobs.models import Job, JobStatus
from openmaas.jobs.run import JobRun, LeaseLost
from openmaas.registry.store import ArtifactStore
from openmaas.training.loop import TrainingStopped

TRACEBACK_LINES = 12
Handler = Callable[[JobRun], None]


def handler_for(kind: str) -> Handler:
    """The function that runs jobs of `kind` (imported here, so the worker stays light)."""
    if kind == "validate_dataset":
        from openmaas.registry.validation import run_validation

        return run_validation
    if kind == "train":
        from openmaas.registry.training import run_training

        return run_training
    raise errors.ValidationFailed(f"unknown job kind {kind!r}", param="kind")


def execute(run: JobRun) -> int:
    """Run the job's handler and settle what it leaves; returns the exit status."""
    clock, claim = run.clock, run.claim
    try:
        handler_for(claim.kind)(run)
        return 0
    except (TrainingStopped, LeaseLost):
        return queue.EXIT_STOPPED
    except errors.OpenMaaSError as exc:
        # A problem with the job's input: retrying cannot fix it.
        with run.db.session() as session:
            queue.finish(session, claim, JobStatus.FAILED, now=clock.now(), error=exc.to_dict()["error"])
        return 0
    except Exception as exc:
        tail = traceback.format_exc().strip().splitlines()[-TRACEBACK_LINES:]
        message = f"{type(exc).__name__}: {exc}"
        run.event("log", message, {"traceback": tail}, level="error")
        with run.db.session() as session:
            queue.record_error(session, claim, {"message": message, "traceback": tail})
        return 1


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = RunSpec.model_validate_json(sys.stdin.buffer.read())
    assert all_tables.Base.metadata.tables  # every table mapped, so foreign keys resolve
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()
    db = Database(spec.database_url)
    try:
        with db.read_session() as session:
            job = session.get(Job, spec.claim.job_id)
            params = dict(job.params) if job is not None else {}
        run = JobRun(
            db=db,
            store=ArtifactStore(Path(spec.artifacts_path)),
            clock=SystemClock(),
            claim=spec.claim,
            params=params,
            stop_requested=lambda: stop.is_set() or os.getppid() != parent,
        )
        return execute(run)
    finally:
        db.dispose()


if __name__ == "__main__":
    sys.exit(main())
