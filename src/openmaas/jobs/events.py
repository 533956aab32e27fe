"""Job events: status changes, per-epoch metrics, progress and log lines, in write order."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from openmaas import logs
from openmaas.jobs.tables import Job, JobEvent

MAX_MESSAGE = 4000

log = logging.getLogger("openmaas.jobs")
_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING}


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
    if type_ == "status":
        _log_status(session, job_id, message[:MAX_MESSAGE], data or {}, level)


def _log_status(session: Session, job_id: str, message: str, data: dict[str, Any], level: str) -> None:
    """Every state change goes through here: the server log tells it once the change commits."""
    job = session.identity_map.get(identity_key(Job, job_id))  # the changed job is loaded: no query
    logs.event_after_commit(
        session,
        log,
        "job_status",
        level=_LEVELS.get(level, logging.INFO),
        job_id=job_id,
        org_id=getattr(job, "org_id", None),
        kind=getattr(job, "kind", None),
        status=data.get("status"),
        attempt=getattr(job, "attempts", None),
        message=message,
    )


def list_after(session: Session, job_id: str, *, after: int | None, limit: int) -> list[JobEvent]:
    """Events of a job in the order written, those after sequence number `after`."""
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.seq > after)
    return list(session.scalars(query.order_by(JobEvent.seq).limit(limit)))
