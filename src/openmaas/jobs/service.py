"""The tenant-facing job operations: get, list, cancel and read events, scoped to one organisation
(another organisation's job is a 404, never a 403)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.jobs import events, queue
from openmaas.jobs.tables import Job, JobEvent, JobStatus
from openmaas.pagination import paginate
from openmaas.schemas.jobs import JobEventList, JobEventPublic, JobPublic
from openmaas.schemas.pages import Page


def job_public(job: Job) -> JobPublic:
    return JobPublic.model_validate(job, from_attributes=True)


def event_public(event: JobEvent) -> JobEventPublic:
    return JobEventPublic(
        id=event.seq,
        job_id=event.job_id,
        created_at=event.created_at,
        type=event.type,
        level=event.level,
        message=event.message,
        data=event.data,
    )


def get_job(session: Session, org_id: str, job_id: str, kind: str | None = None) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.org_id != org_id or (kind is not None and job.kind != kind):
        raise errors.NotFound(f"No job {job_id!r}.", param="job_id")
    return job


def list_jobs(
    session: Session,
    org_id: str,
    *,
    kind: str | None,
    status: str | None,
    limit: int,
    after: str | None,
) -> Page[JobPublic]:
    query = select(Job).where(Job.org_id == org_id)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if status is not None:
        query = query.where(Job.status == status)
    return paginate(session, query, Job.id, limit=limit, after=after, to_public=job_public)


def cancel_job(session: Session, org_id: str, job_id: str, now: datetime, kind: str | None = None) -> Job:
    return queue.request_cancel(session, _locked(session, org_id, job_id, kind), now=now)


def pause_job(session: Session, org_id: str, job_id: str, now: datetime) -> Job:
    return queue.request_pause(session, _locked(session, org_id, job_id), now=now)


def resume_job(session: Session, org_id: str, job_id: str, now: datetime) -> Job:
    return queue.resume(session, _locked(session, org_id, job_id), now=now)


def _locked(session: Session, org_id: str, job_id: str, kind: str | None = None) -> Job:
    """The organisation's job, locked for update (PostgreSQL) while its state changes."""
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or job.org_id != org_id or (kind is not None and job.kind != kind):
        raise errors.NotFound(f"No job {job_id!r}.", param="job_id")
    return job


def job_events(
    session: Session, org_id: str, job_id: str, *, after: int | None, limit: int, kind: str | None = None
) -> JobEventList:
    job = get_job(session, org_id, job_id, kind)
    rows = events.list_after(session, job_id, after=after, limit=limit + 1)
    data = [event_public(row) for row in rows[:limit]]
    return JobEventList(
        data=data,
        last_id=data[-1].id if data else after,
        has_more=len(rows) > limit,
        job_status=job.status,
    )


def is_finished(status: str) -> bool:
    return JobStatus(status).is_terminal
