"""A job process: one attempt of one job, with every table mapped (foreign keys resolve), the
platform's job handlers (`bootstrap.job_handlers`) and the artifact store the worker named.

Beside `bootstrap` in the composition root: the job system below it names no kind of job.
`LocalExecutor` forks `run_job` from a forkserver that imported this module (and what the
handlers preload) once; `RayExecutor` runs `run_job_on_ray` in an actor on the cluster; other
executors may start `python -m openmaas.job_process` with the `RunSpec` JSON on stdin.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from openmaas import tables as all_tables
from openmaas.bootstrap import job_handlers
from openmaas.clock import SystemClock
from openmaas.config import Settings
from openmaas.db.database import Database
from openmaas.jobs import events, runner
from openmaas.jobs.executor import Executor, LocalExecutor, RunSpec
from openmaas.jobs.handlers import preload_modules
from openmaas.storage import ArtifactStore, open_store

if TYPE_CHECKING:
    from openmaas.jobs.ray_executor import AttemptControl


def run_job(spec: RunSpec) -> int:
    """Run the attempt `spec` describes in this process; returns the exit status."""
    assert all_tables.Base.metadata.tables
    return runner.run_attempt(spec, job_handlers(), open_store(spec.storage_url))


def run_job_on_ray(spec: RunSpec, control: AttemptControl) -> int:
    """Run the attempt in a Ray actor (a thread of it): stopped by the actor's flag, not SIGTERM;
    its first event says on which Ray node it runs."""
    from openmaas.jobs.ray_executor import where

    assert all_tables.Base.metadata.tables
    db = Database(spec.database_url)
    clock = SystemClock()
    try:
        place = where()
        node = f"{place['node_ip']} ({place['node_id'][:12]})"
        with db.session() as session:
            events.append(
                session,
                spec.claim.job_id,
                "log",
                f"Attempt {spec.claim.attempt} runs on Ray node {node}.",
                clock.now(),
                {**place, "attempt": spec.claim.attempt},
            )
        return runner.execute(
            job_handlers(),
            db=db,
            store=open_store(spec.storage_url),
            clock=clock,
            claim=spec.claim,
            stop_requested=control.stop.is_set,
            on_resources=control.holds,
        )
    finally:
        db.dispose()


def local_executor(store: ArtifactStore) -> LocalExecutor:
    """An executor forking each attempt's process (`run_job`), its output logged in `store`."""
    return LocalExecutor(store, run_job, preload=preload_modules(job_handlers()))


def job_executor(settings: Settings, store: ArtifactStore) -> Executor:
    """The executor the settings name: local processes, or actors on a Ray cluster."""
    if settings.executor == "ray":
        from openmaas.jobs.ray_executor import RayExecutor

        return RayExecutor(run_job_on_ray, settings.ray_address, settings.ray_job_cpus)
    return local_executor(store)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_job(RunSpec.model_validate_json(sys.stdin.buffer.read()))


if __name__ == "__main__":
    sys.exit(main())
