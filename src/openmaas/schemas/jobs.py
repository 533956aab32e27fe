"""What the API shows of jobs and their events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


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


class JobEventPublic(BaseModel):
    id: int
    object: Literal["job.event"] = "job.event"
    job_id: str
    created_at: datetime
    type: str
    level: str
    message: str
    data: dict[str, Any] | None


class JobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEventPublic]
    last_id: int | None
    has_more: bool
    job_status: str
