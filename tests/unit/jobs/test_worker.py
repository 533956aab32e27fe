"""The worker loop against a fake executor (the `Executor` protocol's test double): it fills its
slots, settles exits, stops cancelled jobs, retries crashes and kills attempts whose lease it lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from openmaas.bootstrap import Platform
from openmaas.jobs import events, queue
from openmaas.jobs.executor import RunSpec
from openmaas.jobs.tables import Job, JobStatus
from openmaas.jobs.worker import Worker, WorkerLimits
from openmaas.tenancy.tables import Organization
from tests.support.clock import FakeClock
from tests.support.platforms import make_platform


class NoParams(BaseModel):
    """The parameters of the test jobs: none."""


class FakeExecution:
    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.code: int | None = None
        self.stopped = False
        self.killed = False

    def poll(self) -> int | None:
        return self.code

    def stop(self) -> None:
        self.stopped = True

    def kill(self) -> None:
        self.killed = True
        self.code = -9


class LostExecution(FakeExecution):
    """An execution that knows why it ended (as a Ray attempt whose node was lost)."""

    def exit_reason(self) -> str | None:
        return "The Ray node running the attempt was lost." if self.code is not None else None


class ReachableExecution(FakeExecution):
    """An execution that can be out of reach without having ended (as a Ray attempt whose node
    stopped answering)."""

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
        self.reach = True

    def reachable(self) -> bool:
        return self.reach


class FakeExecutor:
    def __init__(self, *kinds: type[FakeExecution]) -> None:
        self.kinds = list(kinds)  # of the first executions it starts (then `FakeExecution`)
        self.started: list[FakeExecution] = []

    def warm(self) -> None:
        pass

    def start(self, spec: RunSpec) -> FakeExecution:
        kind = self.kinds.pop(0) if self.kinds else FakeExecution
        self.started.append(kind(spec))
        return self.started[-1]


@pytest.fixture
def plat(tmp_path: Path, database_url: str) -> Iterator[Platform]:
    platform = make_platform(tmp_path / "home", database_url, clock=FakeClock())
    with platform.db.session() as session:
        session.add(Organization(id="org_a", name="a", plan="default", created_at=platform.clock.now()))
    yield platform
    platform.close()


def _worker(plat: Platform, executor: FakeExecutor, heartbeat_s: float = 0.0) -> Worker:
    limits = WorkerLimits(concurrency=2, org_concurrency=5, lease_s=30, heartbeat_s=heartbeat_s, poll_s=0.1)
    return Worker(plat.db, plat.clock, plat.settings, executor=executor, limits=limits)


def _enqueue(plat: Platform, n: int) -> list[str]:
    """The new jobs' ids in the order workers claim them: by id. Ids follow creation only to the
    millisecond (random bits after it), so jobs made within one millisecond may sort either way."""
    with plat.db.session() as session:
        return sorted(
            queue.enqueue(
                session, org_id="org_a", kind="test", params=NoParams(), now=plat.clock.now(), max_attempts=2
            ).id
            for _ in range(n)
        )


def _status(plat: Platform, job_id: str) -> str:
    with plat.db.read_session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status


def test_fills_its_slots_and_takes_more_work_as_jobs_end(plat: Platform) -> None:
    executor = FakeExecutor()
    worker = _worker(plat, executor)
    ids = _enqueue(plat, 3)
    worker.tick()
    assert [e.spec.claim.job_id for e in executor.started] == ids[:2]
    done = executor.started[0]
    with plat.db.session() as session:
        queue.finish(session, done.spec.claim, JobStatus.SUCCEEDED, now=plat.clock.now())
    done.code = 0
    worker.tick()
    assert [e.spec.claim.job_id for e in executor.started] == ids
    assert _status(plat, ids[0]) == "succeeded"


def test_stops_a_cancelled_job_and_retries_a_crashed_one(plat: Platform) -> None:
    executor = FakeExecutor()
    worker = _worker(plat, executor)
    cancelled, crashed = _enqueue(plat, 2)
    worker.tick()
    with plat.db.session() as session:
        queue.request_cancel(session, session.get(Job, cancelled), now=plat.clock.now())  # type: ignore[arg-type]
    worker.tick()
    first, second = executor.started
    assert first.stopped and not second.stopped
    first.code, second.code = queue.EXIT_STOPPED, -9
    worker.tick()
    assert _status(plat, cancelled) == "cancelled"
    assert [e.spec.claim.attempt for e in executor.started[2:]] == [2]  # the crash was re-queued and retried
    assert _status(plat, crashed) == "running"


def test_an_attempt_that_knows_why_it_ended_says_so_in_the_retry_event(plat: Platform) -> None:
    executor = FakeExecutor(LostExecution, FakeExecution)
    worker = _worker(plat, executor)
    lost, crashed = _enqueue(plat, 2)
    worker.tick()
    for execution in executor.started:
        execution.code = 1
    worker.tick()
    with plat.db.read_session() as session:
        said = {
            job_id: [e.message for e in events.list_after(session, job_id, after=None, limit=100)]
            for job_id in (lost, crashed)
        }
    assert "Attempt 1 failed: The Ray node running the attempt was lost. Retrying." in said[lost]
    assert "Attempt 1 failed: The job's subprocess exited with code 1. Retrying." in said[crashed]


def test_kills_an_attempt_whose_lease_it_lost(plat: Platform) -> None:
    clock = plat.clock
    assert isinstance(clock, FakeClock)
    executor = FakeExecutor()
    slow = _worker(plat, executor, heartbeat_s=40.0)
    (job_id,) = _enqueue(plat, 1)
    slow.tick()  # claims and heartbeats, then not for 40 s (longer than its 30 s lease)
    clock.advance(31)
    rival = _worker(plat, FakeExecutor())
    rival.tick()  # sweeps the expired lease and claims the job again
    clock.advance(10)
    slow.tick()  # its heartbeat finds the job held by another attempt
    assert executor.started[0].killed
    assert _status(plat, job_id) == "running"  # still held by the rival's attempt


def test_shutdown_hands_running_jobs_back_to_the_queue(plat: Platform) -> None:
    executor = FakeExecutor()
    worker = _worker(plat, executor)
    (job_id,) = _enqueue(plat, 1)
    worker.tick()
    (execution,) = executor.started

    def stop_and_exit() -> None:
        execution.stopped = True
        execution.code = queue.EXIT_STOPPED

    execution.stop = stop_and_exit  # type: ignore[method-assign]
    worker.shutdown(grace_s=5)
    with plat.db.read_session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "queued" and job.attempts == 0
