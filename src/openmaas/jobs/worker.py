"""A worker: claims jobs from the queue up to its concurrency, runs each attempt through an
executor, keeps their leases alive, stops the ones whose cancellation was requested, settles the
ones whose subprocess died, and sweeps jobs whose worker died (expired leases) back to the queue.

`openmaas worker` runs one as its own process; `openmaas serve` runs one in a thread. Its executor
comes from the composition root (`openmaas.job_process.local_executor`), which knows the jobs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import timedelta

from openmaas import logs
from openmaas.clock import Clock
from openmaas.config import Settings
from openmaas.db.database import Database
from openmaas.ids import new_id
from openmaas.jobs import queue
from openmaas.jobs.executor import Execution, Executor, RunSpec
from openmaas.jobs.tables import Job

log = logging.getLogger("openmaas.worker")

# How long a stopped (cancelled) subprocess gets to exit before it is killed.
STOP_GRACE_S = 10.0


@dataclass
class _Running:
    claim: queue.Claim
    execution: Execution
    stop_sent_at: float | None = None


@dataclass(frozen=True)
class WorkerLimits:
    concurrency: int
    org_concurrency: int
    lease_s: float
    heartbeat_s: float
    poll_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerLimits:
        return cls(
            concurrency=settings.worker_concurrency,
            org_concurrency=settings.worker_org_concurrency,
            lease_s=settings.job_lease_s,
            heartbeat_s=settings.job_heartbeat_s,
            poll_s=settings.job_poll_s,
        )


class Worker:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        *,
        executor: Executor,
        limits: WorkerLimits | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.limits = limits or WorkerLimits.from_settings(settings)
        self.executor = executor
        self.id = f"{socket.gethostname()}:{os.getpid()}:{new_id('wrk_')[-8:]}"
        self.running: dict[str, _Running] = {}
        self._last_heartbeat = -1e18
        self.warming = False  # starting the job forkserver (seconds of imports), holding no job

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.limits.lease_s)

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set, then hand running jobs back to the queue."""
        self.warming = True
        self.executor.warm()
        self.warming = False
        log.info("worker %s started", self.id)
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("worker tick failed; retrying")
            stop.wait(self.limits.poll_s)
        self.shutdown()

    def tick(self) -> None:
        """One round: settle exits, heartbeat, sweep, stop cancelled or paused jobs, claim work."""
        self._settle_exits(releasing=False)
        if self.clock.monotonic() - self._last_heartbeat >= self.limits.heartbeat_s:
            self._heartbeat()
            with self.db.session() as session:
                swept = queue.sweep_expired(session, now=self.clock.now())
            if swept:
                log.info("re-queued jobs with expired leases: %s", swept)
        self._stop_requested()
        self._claim_work()

    def _claim_work(self) -> None:
        while len(self.running) < self.limits.concurrency:
            with self.db.session() as session:
                claim = queue.claim_next(
                    session,
                    owner=self.id,
                    now=self.clock.now(),
                    lease=self.lease,
                    org_limit=self.limits.org_concurrency,
                )
            if claim is None:
                return
            spec = RunSpec(
                claim=claim,
                database_url=self.db.url,
                storage_url=self.settings.resolved_storage_url,
                worker_pid=os.getpid(),
            )
            self.running[claim.job_id] = _Running(claim, self.executor.start(spec))
            log.info("started %s (%s, attempt %d)", claim.job_id, claim.kind, claim.attempt)

    def _heartbeat(self) -> None:
        self._last_heartbeat = self.clock.monotonic()
        for job_id, item in list(self.running.items()):
            if item.execution.poll() is not None:
                continue  # ended; settled on the next round
            with self.db.session() as session:
                held = queue.heartbeat(session, item.claim, now=self.clock.now(), lease=self.lease)
            if not held:
                # Finished by its subprocess a moment ago, or taken over after this lease expired.
                log.info("%s is no longer held by this worker; stopping its process", job_id)
                item.execution.kill()

    def _stop_requested(self) -> None:
        """Stop (SIGTERM, then SIGKILL after a grace period) the jobs asked to cancel or pause."""
        with self.db.read_session() as session:
            cancelled = queue.stop_flags(session, [item.claim for item in self.running.values()])
        now = self.clock.monotonic()
        for job_id in cancelled:
            item = self.running[job_id]
            if item.stop_sent_at is None:
                item.execution.stop()
                item.stop_sent_at = now
            elif now - item.stop_sent_at > STOP_GRACE_S:
                item.execution.kill()

    def _settle_exits(self, *, releasing: bool) -> None:
        for job_id, item in list(self.running.items()):
            code = item.execution.poll()
            if code is None:
                continue
            del self.running[job_id]
            with self.db.session() as session:
                status = queue.after_exit(
                    session, item.claim, exit_code=code, now=self.clock.now(), releasing=releasing
                )
                if status is None:  # its process settled it (succeeded, or failed for good)
                    job = session.get(Job, job_id)
                    status = job.status if job is not None else None
            claim = item.claim
            logs.event(
                log,
                "job_exited",
                job_id=job_id,
                org_id=claim.org_id,
                kind=claim.kind,
                attempt=claim.attempt,
                exit_code=code,
                status=status,
            )

    def shutdown(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop running subprocesses and hand their jobs back to the queue."""
        for item in self.running.values():
            item.execution.stop()
        deadline = self.clock.monotonic() + grace_s
        while self.running and self.clock.monotonic() < deadline:
            self._settle_exits(releasing=True)
            threading.Event().wait(0.1)
        for item in self.running.values():
            item.execution.kill()
        threading.Event().wait(0.2)
        self._settle_exits(releasing=True)


def start_in_thread(worker: Worker) -> tuple[threading.Thread, threading.Event]:
    """Run `worker` in a daemon thread (embedded mode); set the event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="openmaas-worker", daemon=True)
    thread.start()
    return thread, stop
