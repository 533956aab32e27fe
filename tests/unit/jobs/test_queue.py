"""The durable queue's rules: claim order and leases, fencing, the sweeper and retries, per-org
concurrency, cancellation — on each test database, with a clock the tests move."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from openmaas import errors
from openmaas.bootstrap import Platform
from openmaas.jobs import queue
from openmaas.jobs.tables import Job, JobEvent, JobStatus
from openmaas.tenancy.tables import Organization
from tests.support.clock import FakeClock
from tests.support.platforms import make_platform


class NoParams(BaseModel):
    """The parameters of the test jobs: none."""


LEASE = timedelta(seconds=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def plat(tmp_path: Path, database_url: str, clock: FakeClock) -> Iterator[Platform]:
    platform = make_platform(tmp_path / "home", database_url, clock=clock)
    with platform.db.session() as session:
        for org in ("org_a", "org_b"):
            session.add(Organization(id=org, name=org, plan="default", created_at=clock.now()))
    yield platform
    platform.close()


def _enqueue(plat: Platform, org: str = "org_a", max_attempts: int = 2) -> str:
    with plat.db.session() as session:
        job = queue.enqueue(
            session,
            org_id=org,
            kind="test",
            params=NoParams(),
            now=plat.clock.now(),
            max_attempts=max_attempts,
        )
        return job.id


def _claim(plat: Platform, owner: str = "w1", org_limit: int = 10) -> queue.Claim | None:
    with plat.db.session() as session:
        return queue.claim_next(session, owner=owner, now=plat.clock.now(), lease=LEASE, org_limit=org_limit)


def _job(plat: Platform, job_id: str) -> Job:
    with plat.db.read_session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_claims_oldest_first_and_each_job_once(plat: Platform, clock: FakeClock) -> None:
    first, second = _enqueue(plat), _enqueue(plat)
    claim = _claim(plat)
    assert claim is not None and claim.job_id == first and claim.attempt == 1
    other = _claim(plat, owner="w2")
    assert other is not None and other.job_id == second
    assert _claim(plat) is None
    job = _job(plat, first)
    assert job.status == "running" and job.lease_expires_at == clock.now() + LEASE


def test_expired_lease_is_requeued_and_the_old_claim_is_fenced(plat: Platform, clock: FakeClock) -> None:
    job_id = _enqueue(plat)
    stale = _claim(plat, owner="dead")
    assert stale is not None
    clock.advance(20)
    with plat.db.session() as session:
        assert queue.heartbeat(session, stale, now=clock.now(), lease=LEASE)
    clock.advance(40)
    with plat.db.session() as session:
        assert queue.sweep_expired(session, now=clock.now()) == [job_id]
    fresh = _claim(plat, owner="alive")
    assert fresh is not None and fresh.attempt == 2
    with plat.db.session() as session:
        assert not queue.heartbeat(session, stale, now=clock.now(), lease=LEASE)
        assert not queue.finish(session, stale, JobStatus.SUCCEEDED, now=clock.now())
        assert queue.finish(session, fresh, JobStatus.SUCCEEDED, now=clock.now(), result={"ok": True})
    assert _job(plat, job_id).status == "succeeded"


def test_a_job_that_keeps_failing_ends_failed_with_its_error(plat: Platform, clock: FakeClock) -> None:
    job_id = _enqueue(plat, max_attempts=2)
    for attempt in (1, 2):
        claim = _claim(plat)
        assert claim is not None and claim.attempt == attempt
        with plat.db.session() as session:
            queue.record_error(session, claim, {"message": "ValueError: boom", "traceback": ["line"]})
            status = queue.after_exit(session, claim, exit_code=1, now=clock.now(), releasing=False)
        assert status == ("queued" if attempt == 1 else "failed")
    job = _job(plat, job_id)
    assert job.error is not None and job.error["message"] == "ValueError: boom (after 2 attempts)"
    assert job.error["traceback"] == ["line"]
    with plat.db.read_session() as session:
        messages = [e.message for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id))]
    assert "Job failed: ValueError: boom (after 2 attempts)" in messages


def test_sweeper_fails_a_job_whose_workers_keep_dying(plat: Platform, clock: FakeClock) -> None:
    job_id = _enqueue(plat, max_attempts=1)
    assert _claim(plat) is not None
    clock.advance(31)
    with plat.db.session() as session:
        queue.sweep_expired(session, now=clock.now())
    job = _job(plat, job_id)
    assert job.status == "failed" and job.error is not None and "stopped responding" in job.error["message"]


def test_per_organization_concurrency(plat: Platform) -> None:
    a1, a2, b1 = _enqueue(plat, "org_a"), _enqueue(plat, "org_a"), _enqueue(plat, "org_b")
    claims = [_claim(plat, org_limit=1) for _ in range(3)]
    assert [c.job_id if c else None for c in claims] == [a1, b1, None]
    with_a_done = claims[0]
    assert with_a_done is not None
    with plat.db.session() as session:
        queue.finish(session, with_a_done, JobStatus.SUCCEEDED, now=plat.clock.now())
    claim = _claim(plat, org_limit=1)
    assert claim is not None and claim.job_id == a2


def test_cancel_queued_at_once_running_through_its_worker(plat: Platform, clock: FakeClock) -> None:
    queued, running = _enqueue(plat), _enqueue(plat)
    with plat.db.session() as session:
        queue.request_cancel(session, session.get(Job, queued), now=clock.now())  # type: ignore[arg-type]
    claim = _claim(plat)
    assert claim is not None and claim.job_id == running
    with plat.db.session() as session:
        job = session.get(Job, running)
        assert job is not None
        queue.request_cancel(session, job, now=clock.now())
        assert job.status == "running" and job.cancel_requested
        assert queue.stop_flags(session, [claim]) == {running}
        status = queue.after_exit(
            session, claim, exit_code=queue.EXIT_STOPPED, now=clock.now(), releasing=False
        )
    assert status == "cancelled" and _job(plat, queued).status == "cancelled"
    with plat.db.session() as session, pytest.raises(errors.Conflict):
        queue.request_cancel(session, session.get(Job, running), now=clock.now())  # type: ignore[arg-type]


def test_a_shutdown_hands_the_job_back_without_spending_an_attempt(plat: Platform, clock: FakeClock) -> None:
    job_id = _enqueue(plat)
    claim = _claim(plat)
    assert claim is not None
    with plat.db.session() as session:
        queue.after_exit(session, claim, exit_code=queue.EXIT_STOPPED, now=clock.now(), releasing=True)
    job = _job(plat, job_id)
    assert job.status == "queued" and job.attempts == 0


def test_pause_and_resume(plat: Platform, clock: FakeClock) -> None:
    queued, running = _enqueue(plat), _enqueue(plat)
    claim = _claim(plat)
    assert claim is not None and claim.job_id == queued
    with plat.db.session() as session:
        waiting = session.get(Job, running)
        assert waiting is not None
        assert queue.request_pause(session, waiting, now=clock.now()).status == "paused"
        job = session.get(Job, queued)
        assert job is not None
        queue.request_pause(session, job, now=clock.now())
        assert job.status == "running" and queue.stop_flags(session, [claim]) == {queued}
        assert queue.after_exit(
            session, claim, exit_code=queue.EXIT_STOPPED, now=clock.now(), releasing=False
        ) == ("paused")
    assert _claim(plat) is None  # paused jobs are not claimed
    with plat.db.session() as session:
        for job_id in (queued, running):
            job = session.get(Job, job_id)
            assert job is not None
            queue.resume(session, job, now=clock.now())
        with pytest.raises(errors.Conflict):
            queue.resume(session, job, now=clock.now())
    again = _claim(plat)
    assert again is not None and again.job_id == queued and again.attempt == 1  # the pause cost no attempt
