"""The durable queue: enqueue, claim with a lease, heartbeat, finish, retry and the sweeper.

Every function takes a session inside a write transaction and the current time, and does one
state change. A claim is fenced by (lease owner, attempt): a worker whose lease expired and whose
job was claimed again can no longer heartbeat or finish it.

Claiming locks the chosen row with `FOR UPDATE SKIP LOCKED` on PostgreSQL (rows a cancel or the
sweeper holds are skipped, not waited for) under a short advisory lock that keeps per-organisation
limits exact; on SQLite the write transaction is `BEGIN IMMEDIATE`, which serialises claims.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.ids import new_id
from openmaas.jobs import events
from openmaas.jobs.tables import Job, JobStatus

# The PostgreSQL advisory lock that serialises claims (any constant unique to this purpose).
CLAIM_LOCK_KEY = 0x6F6D_6A6F_6273

# Exit status of a job subprocess that stopped because it was asked to (cancel, shutdown).
EXIT_STOPPED = 75


class Claim(BaseModel):
    """A worker's hold on one attempt of a job; crosses the worker → subprocess boundary."""

    job_id: str
    org_id: str
    kind: str
    attempt: int
    owner: str


def enqueue(
    session: Session,
    *,
    org_id: str,
    kind: str,
    params: BaseModel,
    now: datetime,
    max_attempts: int,
    status: JobStatus = JobStatus.QUEUED,
    job_id: str | None = None,
) -> Job:
    """A new job; `params` (its kind's model, validated by the caller) is stored as JSON, read back
    into the same model in the job process. `job_id`: an id of the caller's (OpenAI's `ftjob-…`)."""
    job = Job(
        id=job_id or new_id("job_"),
        org_id=org_id,
        kind=kind,
        status=status.value,
        params=params.model_dump(mode="json"),
        attempts=0,
        max_attempts=max_attempts,
        cancel_requested=False,
        pause_requested=False,
        created_at=now,
    )
    session.add(job)
    session.flush()
    events.append(session, job.id, "status", f"Job created ({status.value}).", now, {"status": status.value})
    return job


def claim_next(
    session: Session, *, owner: str, now: datetime, lease: timedelta, org_limit: int
) -> Claim | None:
    """Claim the oldest queued job of an organisation running fewer than `org_limit` jobs."""
    if session.get_bind().dialect.name == "postgresql":
        # Per-organisation limits count running jobs, so two workers must not both take an
        # organisation's last slot: claims (a few milliseconds each) take turns on this lock.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK_KEY})
    busy_orgs = (
        select(Job.org_id)
        .where(Job.status == JobStatus.RUNNING.value)
        .group_by(Job.org_id)
        .having(func.count() >= org_limit)
    )
    query = (
        select(Job)
        .where(Job.status == JobStatus.QUEUED.value, Job.org_id.not_in(busy_orgs))
        .order_by(Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    job = session.scalar(query)
    if job is None:
        return None
    job.status = JobStatus.RUNNING.value
    job.attempts += 1
    job.lease_owner = owner
    job.lease_expires_at = now + lease
    job.started_at = job.started_at or now
    events.append(
        session,
        job.id,
        "status",
        f"Attempt {job.attempts} of {job.max_attempts} started.",
        now,
        {"status": job.status, "attempt": job.attempts, "worker": owner},
    )
    return Claim(job_id=job.id, org_id=job.org_id, kind=job.kind, attempt=job.attempts, owner=owner)


def _held(claim: Claim) -> Any:
    return (
        (Job.id == claim.job_id)
        & (Job.lease_owner == claim.owner)
        & (Job.attempts == claim.attempt)
        & (Job.status == JobStatus.RUNNING.value)
    )


def heartbeat(session: Session, claim: Claim, *, now: datetime, lease: timedelta) -> bool:
    """Extend the lease; False if the claim lost the job (expired and taken over, or ended)."""
    extended = session.execute(update(Job).where(_held(claim)).values(lease_expires_at=now + lease))
    return bool(getattr(extended, "rowcount", 0))


def stop_flags(session: Session, claims: list[Claim]) -> set[str]:
    """The ids, among jobs these claims hold, asked to cancel or pause (a cheap read)."""
    if not claims:
        return set()
    ids = [claim.job_id for claim in claims]
    asked = Job.cancel_requested.is_(True) | Job.pause_requested.is_(True)
    rows = session.scalars(select(Job.id).where(Job.id.in_(ids), asked))
    return set(rows)


def held_job(session: Session, claim: Claim) -> Job | None:
    """The job, if this claim still holds it (locked for update on PostgreSQL)."""
    return session.scalar(select(Job).where(_held(claim)).with_for_update())


def finish(
    session: Session,
    claim: Claim,
    status: JobStatus,
    *,
    now: datetime,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> bool:
    """End the job in a terminal state; False if the claim no longer holds it."""
    job = held_job(session, claim)
    if job is None:
        return False
    _end(session, job, status, now, result=result, error=error)
    return True


def _end(
    session: Session,
    job: Job,
    status: JobStatus,
    now: datetime,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    job.status = status.value
    job.result = result if result is not None else job.result
    job.error = error if error is not None else job.error
    job.lease_owner = None
    job.lease_expires_at = None
    job.finished_at = now
    message = f"Job {status.value}."
    if error:
        message = f"Job {status.value}: {error.get('message')}"
    events.append(
        session,
        job.id,
        "status",
        message,
        now,
        {"status": status.value},
        level="error" if status == JobStatus.FAILED else "info",
    )


def record_error(session: Session, claim: Claim, error: dict[str, Any]) -> None:
    """Keep the error of a failed attempt on the job, for `retry_or_fail` to report."""
    session.execute(update(Job).where(_held(claim)).values(error=error))


def after_exit(
    session: Session,
    claim: Claim,
    *,
    exit_code: int,
    now: datetime,
    releasing: bool,
    reason: str | None = None,
) -> str | None:
    """Settle a job whose subprocess exited without finishing it; the new status, if any.
    `reason`: why it ended, when its executor knows better than the exit status."""
    job = held_job(session, claim)
    if job is None:
        return None
    if job.cancel_requested:
        _end(session, job, JobStatus.CANCELLED, now)
    elif job.pause_requested:
        _pause(session, job, now)
    elif releasing and exit_code == EXIT_STOPPED:
        _requeue(session, job, now, "The worker shut down; the job goes back to the queue.", count=False)
    else:
        error = job.error or {"message": reason or f"The job's subprocess exited with code {exit_code}."}
        _retry_or_fail(session, job, now, error)
    return job.status


def sweep_expired(session: Session, *, now: datetime) -> list[str]:
    """Re-queue running jobs whose lease expired (their worker died), up to `max_attempts`."""
    expired = session.scalars(
        select(Job)
        .where(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now)
        .with_for_update(skip_locked=True)
    ).all()
    for job in expired:
        if job.cancel_requested:
            _end(session, job, JobStatus.CANCELLED, now)
            continue
        if job.pause_requested:
            _pause(session, job, now)
            continue
        error = job.error or {"message": f"The worker running attempt {job.attempts} stopped responding."}
        _retry_or_fail(session, job, now, error)
    return [job.id for job in expired]


def _retry_or_fail(session: Session, job: Job, now: datetime, error: dict[str, Any]) -> None:
    if job.attempts < job.max_attempts:
        job.error = None
        _requeue(session, job, now, f"Attempt {job.attempts} failed: {error.get('message')} Retrying.")
        return
    final = dict(error)
    final["message"] = f"{error.get('message')} (after {job.attempts} attempts)"
    _end(session, job, JobStatus.FAILED, now, error=final)


def _requeue(session: Session, job: Job, now: datetime, message: str, *, count: bool = True) -> None:
    job.status = JobStatus.QUEUED.value
    job.lease_owner = None
    job.lease_expires_at = None
    if not count:
        job.attempts -= 1
    events.append(session, job.id, "status", message, now, {"status": job.status}, level="warning")


def request_cancel(session: Session, job: Job, *, now: datetime) -> Job:
    """Cancel a job: at once if no worker runs it, else flag it for its worker to stop."""
    status = JobStatus(job.status)
    if status.is_terminal:
        raise errors.Conflict(f"Job {job.id} already {status.value}.", param="job_id", code="job_finished")
    if status == JobStatus.RUNNING:
        if not job.cancel_requested:
            job.cancel_requested = True
            events.append(session, job.id, "status", "Cancellation requested.", now, {"status": job.status})
        return job
    job.cancel_requested = True
    _end(session, job, JobStatus.CANCELLED, now)
    return job


def request_pause(session: Session, job: Job, *, now: datetime) -> Job:
    """Pause a job: a queued one at once, a running one after its worker stops it (its
    checkpoints stay, so `resume` continues where it was)."""
    status = JobStatus(job.status)
    if status == JobStatus.QUEUED:
        _pause(session, job, now, count=False)
    elif status == JobStatus.RUNNING:
        if not job.pause_requested:
            job.pause_requested = True
            events.append(session, job.id, "status", "Pause requested.", now, {"status": job.status})
    elif status != JobStatus.PAUSED:
        raise errors.Conflict(
            f"Job {job.id} is {status.value}; only queued or running jobs pause.",
            param="job_id",
            code="job_state",
        )
    return job


def resume(session: Session, job: Job, *, now: datetime) -> Job:
    if job.status != JobStatus.PAUSED.value:
        raise errors.Conflict(f"Job {job.id} is {job.status}, not paused.", param="job_id", code="job_state")
    job.status = JobStatus.QUEUED.value
    events.append(session, job.id, "status", "Job resumed; queued.", now, {"status": job.status})
    return job


def _pause(session: Session, job: Job, now: datetime, *, count: bool = True) -> None:
    job.status = JobStatus.PAUSED.value
    job.pause_requested = False
    job.lease_owner = None
    job.lease_expires_at = None
    if count:
        job.attempts -= 1  # a pause is not a failed attempt
    message = "Job paused; resuming continues from its last checkpoint."
    events.append(session, job.id, "status", message, now, {"status": job.status})


def set_status(session: Session, job: Job, status: JobStatus, now: datetime, message: str) -> None:
    """Move a job between non-running states (e.g. `validating_files` → `queued`)."""
    job.status = status.value
    if status.is_terminal:
        job.finished_at = now
    events.append(session, job.id, "status", message, now, {"status": status.value})
