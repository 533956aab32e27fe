"""One attempt of a job in this process: read its parameters into its handler's model, run the
handler, and settle what it leaves. The caller (a job process's entry point, `openmaas.job_process`)
gives the handlers and the store.

Exit status 0: the job was settled here (succeeded, or failed for a reason retrying cannot fix).
`EXIT_STOPPED`: it stopped because it was asked to (SIGTERM from the worker) or lost its lease.
Anything else: the attempt failed; the worker retries it up to `max_attempts`.
"""

from __future__ import annotations

import signal
import threading
import traceback
from collections.abc import Callable
from typing import Any

import pydantic

from openmaas import errors
from openmaas.clock import Clock, SystemClock
from openmaas.db.database import Database
from openmaas.jobs import events, queue
from openmaas.jobs.executor import Resources, RunSpec
from openmaas.jobs.handlers import JobHandler, JobHandlers
from openmaas.jobs.run import JobRun, JobStopped
from openmaas.jobs.tables import Job, JobStatus
from openmaas.storage import ArtifactStore, process_alive

TRACEBACK_LINES = 12


def run_attempt(spec: RunSpec, handlers: JobHandlers, store: ArtifactStore) -> int:
    """Run the attempt described by `spec` in this process; returns the exit status."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    db = Database(spec.database_url)
    try:
        return execute(
            handlers,
            db=db,
            store=store,
            clock=SystemClock(),
            claim=spec.claim,
            # The worker gone (killed): stop; another worker takes the job over from its checkpoint.
            stop_requested=lambda: stop.is_set() or not process_alive(spec.worker_pid),
        )
    finally:
        db.dispose()


def execute(
    handlers: JobHandlers,
    *,
    db: Database,
    store: ArtifactStore,
    clock: Clock,
    claim: queue.Claim,
    stop_requested: Callable[[], bool],
    on_resources: Callable[[Resources], None] | None = None,
) -> int:
    """Run the claimed job's handler and settle what it leaves; returns the exit status."""
    try:
        handler = _handler(handlers, claim.kind)
        params = _params(db, claim, handler)
        handler.run(
            JobRun(
                db=db,
                store=store,
                clock=clock,
                claim=claim,
                params=params,
                stop_requested=stop_requested,
                on_resources=on_resources,
            )
        )
        return 0
    except JobStopped:
        return queue.EXIT_STOPPED
    except errors.OpenMaaSError as exc:
        # A problem with the job's input: retrying cannot fix it.
        with db.session() as session:
            queue.finish(session, claim, JobStatus.FAILED, now=clock.now(), error=exc.to_dict()["error"])
        return 0
    except Exception as exc:
        tail = traceback.format_exc().strip().splitlines()[-TRACEBACK_LINES:]
        message = f"{type(exc).__name__}: {exc}"
        with db.session() as session:
            data = {"traceback": tail}
            events.append(session, claim.job_id, "log", message, clock.now(), data, level="error")
            queue.record_error(session, claim, {"message": message, "traceback": tail})
        return 1


def _handler(handlers: JobHandlers, kind: str) -> JobHandler[Any]:
    handler = handlers.get(kind)
    if handler is None:
        raise errors.ValidationFailed(f"unknown job kind {kind!r}", param="kind")
    return handler


def _params(db: Database, claim: queue.Claim, handler: JobHandler[Any]) -> pydantic.BaseModel:
    """The job's stored parameters, read into its handler's model."""
    with db.read_session() as session:
        job = session.get(Job, claim.job_id)
        stored = dict(job.params) if job is not None else {}
    try:
        return handler.params.model_validate(stored)
    except pydantic.ValidationError as exc:
        raise errors.ValidationFailed(
            f"the parameters of job {claim.job_id} are not those of a {claim.kind} job: {exc}", param="params"
        ) from None
