"""Helpers for tests of jobs: a platform with fast worker timings, a worker in a thread, and
polling for a state."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import select

from openmaas.api.app import create_app
from openmaas.bootstrap import Platform
from openmaas.db.database import Database
from openmaas.job_process import local_executor
from openmaas.jobs.executor import Executor
from openmaas.jobs.tables import Job, JobEvent
from openmaas.jobs.worker import Worker, WorkerLimits, start_in_thread
from openmaas.metering.tables import UsageRecord
from tests.support.platforms import make_platform
from tests.support.served import Served
from tests.support.server import running_server
from tests.support.workers import start_worker

T = TypeVar("T")
METER_S = 1.0  # compute billed per second of a job: tests see several intervals
FAST = {"job_poll_s": 0.1, "job_heartbeat_s": 0.5, "job_lease_s": 4.0, "job_meter_interval_s": METER_S}


def fast_platform(home: Path, database_url: str, **overrides: Any) -> Platform:
    return make_platform(home, database_url, **{**FAST, **overrides})


def fast_worker_env(lease_s: float) -> dict[str, str]:
    """The settings of an `openmaas worker` subprocess with fast timings and the given lease."""
    return {
        "OPENMAAS_JOB_LEASE_S": str(lease_s),
        "OPENMAAS_JOB_HEARTBEAT_S": "0.5",
        "OPENMAAS_JOB_POLL_S": "0.2",
        "OPENMAAS_JOB_METER_INTERVAL_S": str(METER_S),
    }


@contextmanager
def fast_server(home: Path, database_url: str, **overrides: Any) -> Iterator[Served]:
    """A `fast_platform` behind a real server on a free port, closed afterwards."""
    platform = fast_platform(home, database_url, **overrides)
    assert platform.new_admin_key is not None
    with running_server(create_app(platform)) as url:
        yield Served(url, platform, platform.new_admin_key)
    platform.close()


@contextmanager
def killable_worker(served: Served, log: Path, lease_s: float) -> Iterator[subprocess.Popen[bytes]]:
    """`openmaas worker` with fast timings in a process group of its own, so that a SIGKILL of the
    group reaches its job processes too (as when a machine dies); killed at the end if still alive."""
    process = start_worker(served.platform.settings, log, fast_worker_env(lease_s), own_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@contextmanager
def worker_running(
    platform: Platform, executor: Executor | None = None, join_s: float = 30, **limits: Any
) -> Iterator[Worker]:
    """The job worker in a thread, billing compute: attempts as local subprocesses unless another
    `executor` is given (the cluster tests give Ray's, and a longer `join_s` for it to stop)."""
    base = WorkerLimits.from_settings(platform.settings)
    worker = Worker(
        platform.db,
        platform.clock,
        platform.settings,
        executor=executor or local_executor(platform.store),
        limits=WorkerLimits(**{**base.__dict__, **limits}),
        meter=platform.job_compute,
    )
    thread, stop = start_in_thread(worker)
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=join_s)


@dataclass(frozen=True)
class Billed:
    """One attempt's billed compute: its intervals' (index, milliseconds), in order, and its wall
    time (from its start to the next attempt's start or the job's end)."""

    attempt: int
    started_at: datetime
    ended_at: datetime
    intervals: list[tuple[int, int]]

    @property
    def seconds(self) -> float:
        return sum(ms for _, ms in self.intervals) / 1000

    @property
    def wall_s(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


def billed_attempts(db: Database, job_id: str) -> list[Billed]:
    """Each attempt of a finished job, in order, with the CPU compute billed for it (under
    `<job>:compute:<attempt>.<worker>:<interval>`: an attempt killed in its first interval has none)."""
    with db.read_session() as session:
        rows = session.scalars(
            select(UsageRecord).where(UsageRecord.event_id.like(f"{job_id}:compute:%"))
        ).all()
        started = session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.message.like("Attempt % started.%"))
            .order_by(JobEvent.seq)
        ).all()
        job = session.get(Job, job_id)
        assert job is not None and job.finished_at is not None
    runs: dict[int, list[tuple[int, int]]] = {}
    for row in rows:
        _, _, run, interval = row.event_id.split(":")
        assert row.resource_class == "cpu"
        runs.setdefault(int(run.split(".")[0]), []).append((int(interval), row.qty_compute_ms or 0))
    attempts = [int(e.message.split()[1]) for e in started]  # "Attempt N of M started. …"
    assert set(runs) <= set(attempts)
    ends = [*(e.created_at for e in started[1:]), job.finished_at]
    return [
        Billed(attempt, e.created_at, end, sorted(runs.get(attempt, [])))
        for attempt, e, end in zip(attempts, started, ends, strict=True)
    ]


def wait_for(check: Callable[[], T | None], timeout: float = 60.0, every: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def job_in(client: httpx.Client, path: str, states: set[str], timeout: float = 90.0) -> dict[str, Any]:
    """Poll `path` (a job) until its status is one of `states`; returns the job."""

    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(path).json()
        return body if body.get("status") in states else None

    try:
        return wait_for(check, timeout, every=0.2)
    except AssertionError:
        raise AssertionError(f"{path} never reached {states}: {client.get(path).text}") from None


def upload(client: httpx.Client, path: Path, name: str, **params: str) -> httpx.Response:
    with open(path, "rb") as handle:
        return client.post(
            "/v1/datasets",
            params={"name": name, "filename": path.name, **params},
            content=handle.read(),
            headers={"Content-Type": "application/octet-stream"},
        )
