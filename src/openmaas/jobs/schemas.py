"""What the API shows of jobs and their events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from openmaas.jobs.tables import Job, JobEvent


class JobPublic(BaseModel):
    id: str
    object: Literal["job"] = "job"
    kind: str
    status: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    pause_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            params=job.params,
            result=job.result,
            error=job.error,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            cancel_requested=job.cancel_requested,
            pause_requested=job.pause_requested,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class JobEventPublic(BaseModel):
    id: int
    object: Literal["job.event"] = "job.event"
    job_id: str
    created_at: datetime
    type: str
    level: str
    message: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, event: JobEvent) -> JobEventPublic:
        return cls(
            id=event.seq,
            job_id=event.job_id,
            created_at=event.created_at,
            type=event.type,
            level=event.level,
            message=event.message,
            data=event.data,
        )


class JobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEventPublic]
    last_id: int | None
    has_more: bool
    job_status: str
