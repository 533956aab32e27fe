"""A job process: one attempt of one job, with every table mapped (foreign keys resolve), the
platform's job handlers (`bootstrap.job_handlers`) and the artifact store the worker named.

Beside `bootstrap` in the composition root: the job system below it names no kind of job.
`LocalExecutor` forks `run_job` from a forkserver that imported this module (and what the
handlers preload) once; other executors start `python -m openmaas.job_process` with the
`RunSpec` JSON on stdin.
"""

from __future__ import annotations

import logging
import sys

from openmaas import tables as all_tables
from openmaas.bootstrap import job_handlers
from openmaas.jobs import runner
from openmaas.jobs.executor import LocalExecutor, RunSpec
from openmaas.jobs.handlers import preload_modules
from openmaas.storage import ArtifactStore, open_store


def run_job(spec: RunSpec) -> int:
    """Run the attempt `spec` describes in this process; returns the exit status."""
    assert all_tables.Base.metadata.tables
    return runner.run_attempt(spec, job_handlers(), open_store(spec.storage_url))


def local_executor(store: ArtifactStore) -> LocalExecutor:
    """An executor forking each attempt's process (`run_job`), its output logged in `store`."""
    return LocalExecutor(store, run_job, preload=preload_modules(job_handlers()))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_job(RunSpec.model_validate_json(sys.stdin.buffer.read()))


if __name__ == "__main__":
    sys.exit(main())
