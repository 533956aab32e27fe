"""The entry point of a job process: `run_in_child`, forked by `LocalExecutor`, or
`python -m openmaas.jobs.runner` with the `RunSpec` JSON on stdin.

Exit status 0: the job was settled here (succeeded, or failed for a reason retrying cannot fix).
`EXIT_STOPPED`: it stopped because it was asked to (SIGTERM from the worker) or lost its lease.
Anything else: the attempt failed; the worker retries it up to `max_attempts`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from openmaas import errors
from openmaas import tables as all_tables
from openmaas.clock import SystemClock
from openmaas.db.database import Database
from openmaas.jobs import queue
from openmaas.jobs.executor import RunSpec
from openmaas.jobs.run import JobRun, LeaseLost
from openmaas.jobs.tables import Job, JobStatus
from openmaas.storage import ArtifactStore
from openmaas.training.loop import TrainingStopped

TRACEBACK_LINES = 12
Handler = Callable[[JobRun], None]


def handler_for(kind: str) -> Handler:
    """The function that runs jobs of `kind` (imported here, so the worker stays light)."""
    if kind == "validate_dataset":
        from openmaas.datasets.jobs import run_validation

        return run_validation
    if kind == "train":
        from openmaas.training.jobs import run_training

        return run_training
    if kind == "optimize":
        from openmaas.optimize.jobs import run_optimization

        return run_optimization
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


def run_spec(spec: RunSpec) -> int:
    """Run one attempt described by `spec` in this process; returns the exit status."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    assert all_tables.Base.metadata.tables  # every table mapped, so foreign keys resolve
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
            # The worker gone (killed): stop; another worker takes the job over from its checkpoint.
            stop_requested=lambda: stop.is_set() or not _alive(spec.worker_pid),
        )
        return execute(run)
    finally:
        db.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_forkserver() -> None:
    """Be killed when the forkserver exits, and let it exit when its worker dies.

    A forked job holds the forkserver's "alive" pipe, which would keep the forkserver (and so the
    job) running after a SIGKILL of the worker; closing it here lets the forkserver see its worker
    go, and PR_SET_PDEATHSIG makes the kernel kill this process when the forkserver ends.
    """
    from multiprocessing import forkserver

    with contextlib.suppress(OSError, AttributeError, TypeError):
        os.close(forkserver._forkserver._forkserver_alive_fd)  # type: ignore[attr-defined]
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_in_child(spec_json: str, log_path: str) -> None:
    """The target of a job process forked by `LocalExecutor`: log to the attempt's file, run."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _die_with_forkserver()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    sys.exit(run_spec(RunSpec.model_validate_json(spec_json)))


def main() -> int:
    """`python -m openmaas.jobs.runner` with the `RunSpec` JSON on stdin (for other executors)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_spec(RunSpec.model_validate_json(sys.stdin.buffer.read()))


if __name__ == "__main__":
    sys.exit(main())
