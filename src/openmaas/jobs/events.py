"""Job events: status changes, per-epoch metrics, progress and log lines, in write order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.jobs.tables import JobEvent

MAX_MESSAGE = 4000


def append(
    session: Session,
    job_id: str,
    type_: str,
    message: str,
    now: datetime,
    data: dict[str, Any] | None = None,
    *,
    level: str = "info",
) -> None:
    session.add(
        JobEvent(
            job_id=job_id, created_at=now, type=type_, level=level, message=message[:MAX_MESSAGE], data=data
        )
    )


def list_after(session: Session, job_id: str, *, after: int | None, limit: int) -> list[JobEvent]:
    """Events of a job in the order written, those after sequence number `after`."""
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.seq > after)
    return list(session.scalars(query.order_by(JobEvent.seq).limit(limit)))
