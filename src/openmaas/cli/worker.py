"""`openmaas worker`: run a job worker as its own process (cluster mode, or more capacity), with the
billing scheduler beside it; and the in-process worker `openmaas serve` starts in embedded mode
(where the API server already runs the scheduler)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from openmaas.cli.output import console, fail

if TYPE_CHECKING:
    from openmaas.bootstrap import Platform
    from openmaas.jobs.worker import Worker


def _worker(platform: Platform, concurrency: int | None, org_concurrency: int | None) -> Worker:
    from dataclasses import replace

    from openmaas.job_process import job_executor
    from openmaas.jobs.worker import Worker, WorkerLimits
    from openmaas.optimize import staging

    limits = WorkerLimits.from_settings(platform.settings)
    limits = replace(
        limits,
        concurrency=concurrency or limits.concurrency,
        org_concurrency=org_concurrency or limits.org_concurrency,
    )
    # What optimisation jobs no longer running left in the store goes now (one killed with SIGKILL
    # cleans nothing up itself).
    staging.remove_stale(platform.db, platform.store, platform.clock.now())
    platform.store.clear_abandoned()  # and what writers killed on this machine left half-written
    executor = job_executor(platform.settings, platform.store)
    return Worker(
        platform.db,
        platform.clock,
        platform.settings,
        executor=executor,
        limits=limits,
        meter=platform.job_compute,
    )


def worker(
    concurrency: int = typer.Option(None, min=1, help="Jobs at once (default OPENMAAS_WORKER_CONCURRENCY)"),
    org_concurrency: int = typer.Option(
        None, min=1, help="Jobs at once per organization (default OPENMAAS_WORKER_ORG_CONCURRENCY)"
    ),
) -> None:
    """Run a job worker until interrupted: it claims queued jobs and runs each in a subprocess."""
    from openmaas import logs
    from openmaas.cli.server import open_platform
    from openmaas.db import migrate

    platform = open_platform()
    logs.configure(platform.settings.log_format, platform.settings.log_level)
    if not migrate.schema_state(platform.db).is_current:
        fail("The database schema is not current: run `openmaas db upgrade` first.")
    running = _worker(platform, concurrency, org_concurrency)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # The billing chores (storage sample, month-end invoices) run here as in every API server, so a
    # cluster with no server up still bills; each slot's claim in `billing_chores` keeps the
    # processes from doing one slot twice.
    platform.billing_scheduler.start()
    platform.meter.start()  # its writer also releases the budget holds of crashed servers
    console.print(f"[bold green]OpenMaaS worker[/] {running.id}: {running.limits.concurrency} job(s) at once")
    try:
        running.run(stop)
    finally:
        platform.close()


@contextmanager
def embedded_worker(platform: Platform, *, enabled: bool) -> Iterator[None]:
    """Run a worker in a thread for as long as the block lasts (unless `serve --no-worker`)."""
    if not enabled:
        yield
        return
    worker = _worker(platform, None, None)
    stop = threading.Event()

    def work() -> None:
        try:
            worker.run(stop)
        except Exception:
            if not stop.is_set():
                raise
            # Stopped (Ctrl-C) while the job forkserver still started: it goes with this process,
            # and its warm-up with it. Nothing to report.

    thread = threading.Thread(target=work, name="openmaas-worker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        # While it still imports the job forkserver's modules it holds no job: don't wait for it
        # (the thread is a daemon; the forkserver exits with this process).
        thread.join(timeout=0.5 if worker.warming else 30)
