"""A worker: claims jobs from the queue up to its concurrency, runs each attempt through an
executor, keeps their leases alive, stops the ones whose cancellation was requested, settles the
ones whose subprocess died, and sweeps jobs whose worker died (expired leases) back to the queue.

`openmaas worker` runs one as its own process; `openmaas serve` runs one in a thread. Its executor
comes from the composition root (`openmaas.job_process.local_executor`), which knows the jobs.

Compute is metered here, per interval of `meter_s` seconds of each attempt's wall time, through the
`ComputeMeter` the composition root passes in (metering sits above the jobs). Before an interval the
worker holds its cost on the organisation's budget; once it has passed (the attempt's process seen
alive at its end) it bills the whole interval × the attempt's `Resources`; when the attempt ends it
bills the last, partial interval up to the last time it saw the process alive — so an attempt is
billed for at most what it ran (less by at most one poll). An attempt out of reach (a Ray attempt
whose node stopped answering) is not seen alive: nothing more is billed until it answers again.
Each interval's event id names the job, the attempt, this worker's claim and the interval's index:
a retried write meters once, and a worker killed mid-interval bills nothing for that interval (its
hold expires). An interval whose hold the budget refuses pauses the job (its checkpoints stay:
resume once credit is added).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from openmaas import errors, logs
from openmaas.clock import Clock
from openmaas.config import Settings
from openmaas.db.database import Database
from openmaas.ids import new_id
from openmaas.jobs import events, queue
from openmaas.jobs.executor import (
    Execution,
    Executor,
    ExplainsExit,
    ReportsReach,
    ReportsResources,
    Resources,
    RunSpec,
)
from openmaas.jobs.tables import Job

log = logging.getLogger("openmaas.worker")

# How long a stopped (cancelled) subprocess gets to exit before it is killed.
STOP_GRACE_S = 10.0


class ComputeMeter(Protocol):
    """Bills the compute of running attempts (metering's, passed in by the composition root)."""

    def begin(self, claim: queue.Claim, interval: int, resources: Resources, seconds: float) -> object:
        """Hold the cost of the interval (`seconds` of `resources`) on the organisation's budget;
        returns the hold for `end`. Raises `errors.InsufficientQuota` when the budget is exhausted."""
        ...

    def end(
        self, claim: queue.Claim, interval: int, resources: Resources, seconds: float, hold: object | None
    ) -> None:
        """Bill `seconds` of the interval, once per (claim, interval), and settle its hold (None:
        none was taken)."""
        ...


@dataclass
class _Running:
    claim: queue.Claim
    execution: Execution
    stop_sent_at: float | None = None
    resources: Resources = field(default_factory=Resources)
    started_at: float = 0.0  # monotonic, when its process started
    seen_alive_at: float = 0.0  # monotonic, the last time its process was seen running
    interval: int = 0  # the interval being metered
    hold: object | None = None  # the current interval's hold
    over_budget: bool = False


@dataclass(frozen=True)
class WorkerLimits:
    concurrency: int
    org_concurrency: int
    lease_s: float
    heartbeat_s: float
    poll_s: float
    meter_s: float = 60.0  # the interval compute is billed in

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerLimits:
        return cls(
            concurrency=settings.worker_concurrency,
            org_concurrency=settings.worker_org_concurrency,
            lease_s=settings.job_lease_s,
            heartbeat_s=settings.job_heartbeat_s,
            poll_s=settings.job_poll_s,
            meter_s=settings.job_meter_interval_s,
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
        meter: ComputeMeter | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.limits = limits or WorkerLimits.from_settings(settings)
        self.executor = executor
        self.meter = meter  # None: compute is not billed (tests of the queue alone)
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
        """One round: settle exits, meter compute, heartbeat, sweep, stop cancelled or paused jobs,
        claim work."""
        self._settle_exits(releasing=False)
        self._meter_intervals()
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
            resources = self._requested(claim)
            hold = self._begin(claim, 0, resources)
            if hold is _REFUSED:
                self._pause_unstarted(claim)
                continue
            spec = RunSpec(
                claim=claim,
                database_url=self.db.url,
                storage_url=self.settings.resolved_storage_url,
                worker_pid=os.getpid(),
            )
            execution = self.executor.start(spec)
            now = self.clock.monotonic()
            item = _Running(
                claim, execution, resources=resources, started_at=now, seen_alive_at=now, hold=hold
            )
            self.running[claim.job_id] = item
            log.info("started %s (%s, attempt %d)", claim.job_id, claim.kind, claim.attempt)

    def _requested(self, claim: queue.Claim) -> Resources:
        if self.meter is None:
            return Resources()
        with self.db.read_session() as session:
            job = session.get(Job, claim.job_id)
            return Resources.requested(dict(job.params or {}) if job is not None else {})

    def _begin(self, claim: queue.Claim, interval: int, resources: Resources) -> object | None:
        """Hold the interval's cost: the hold, None (nothing held: billed all the same), or
        `_REFUSED` (the budget is exhausted)."""
        if self.meter is None:
            return None
        try:
            return self.meter.begin(claim, interval, resources, self.limits.meter_s)
        except errors.InsufficientQuota:
            return _REFUSED
        except Exception:
            log.exception("holding the compute of %s failed; it is billed without a hold", claim.job_id)
            return None

    def _end(self, item: _Running, seconds: float) -> None:
        if self.meter is None:
            return
        hold, item.hold = item.hold, None
        try:
            self.meter.end(item.claim, item.interval, item.resources, max(0.0, seconds), hold)
        except Exception:
            log.exception("billing interval %d of %s failed", item.interval, item.claim.job_id)

    def _meter_intervals(self) -> None:
        """Bill each running attempt's intervals that have passed, and hold the next one; an
        attempt whose next interval the budget refuses is paused."""
        if self.meter is None:
            return
        step = self.limits.meter_s
        for item in list(self.running.values()):
            execution = item.execution
            if execution.poll() is not None:
                continue  # ended: its last interval is billed when it is settled
            if isinstance(execution, ReportsReach) and not execution.reachable():
                continue  # not known to run: billed once reached; ended, up to when last reached
            now = self.clock.monotonic()
            item.seen_alive_at = now
            while not item.over_budget and now - item.started_at >= (item.interval + 1) * step:
                self._end(item, step)
                item.interval += 1
                if isinstance(execution, ReportsResources):
                    # What it holds from now on (a Ray attempt once its training workers started).
                    item.resources = execution.resources()
                hold = self._begin(item.claim, item.interval, item.resources)
                if hold is _REFUSED:
                    item.over_budget = True
                    self._pause_over_budget(item.claim)
                else:
                    item.hold = hold

    def _pause_over_budget(self, claim: queue.Claim) -> None:
        """Ask the job to pause (the worker stops it like any pause), saying why."""
        with self.db.session() as session:
            job = queue.held_job(session, claim)
            if job is None:
                return
            events.append(
                session,
                job.id,
                "billing",
                _OVER_BUDGET,
                self.clock.now(),
                dict(_OVER_BUDGET_DATA),
                level="warning",
            )
            queue.request_pause(session, job, now=self.clock.now())

    def _pause_unstarted(self, claim: queue.Claim) -> None:
        """A claimed job the budget cannot run at all: paused before its process starts."""
        self._pause_over_budget(claim)
        with self.db.session() as session:
            queue.after_exit(
                session, claim, exit_code=queue.EXIT_STOPPED, now=self.clock.now(), releasing=False
            )

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
            if not item.over_budget:
                # The last interval: up to the last time the process was seen running.
                self._end(item, item.seen_alive_at - item.started_at - item.interval * self.limits.meter_s)
            execution = item.execution
            reason = execution.exit_reason() if isinstance(execution, ExplainsExit) else None
            with self.db.session() as session:
                status = queue.after_exit(
                    session,
                    item.claim,
                    exit_code=code,
                    now=self.clock.now(),
                    releasing=releasing,
                    reason=reason,
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


_REFUSED = object()  # `_begin`: the budget refused the interval
_OVER_BUDGET = (
    "Stopped: the organization has no budget left for compute (prepaid credit used up or monthly "
    "spending cap reached). The job pauses at its last checkpoint; resume it once credit is added "
    "or the cap raised."
)
_OVER_BUDGET_DATA = {"reason": "insufficient_quota"}


def start_in_thread(worker: Worker) -> tuple[threading.Thread, threading.Event]:
    """Run `worker` in a daemon thread (embedded mode); set the event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="openmaas-worker", daemon=True)
    thread.start()
    return thread, stop
