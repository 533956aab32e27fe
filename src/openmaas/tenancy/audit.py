"""The audit log: one entry per mutating call, written by the API layer, listed by operators and
tenant admins. Entries are never updated or deleted by the platform."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.ids import new_id
from openmaas.pagination import paginate
from openmaas.schemas import tenancy as schemas
from openmaas.schemas.pages import Page
from openmaas.tenancy.tables import AuditEntry


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What the API layer knows about a finished mutating call."""

    org_id: str | None
    actor_key_id: str | None
    action: str
    method: str
    path: str
    target_id: str | None
    request_id: str
    status_code: int
    error_code: str | None


def record(session: Session, entry: AuditRecord, now: datetime) -> None:
    session.add(
        AuditEntry(
            id=new_id("aud_"),
            created_at=now,
            org_id=entry.org_id,
            actor_key_id=entry.actor_key_id,
            action=entry.action,
            method=entry.method,
            path=entry.path[:500],
            target_id=entry.target_id,
            request_id=entry.request_id[:100],
            outcome="success" if entry.status_code < 400 else "failure",
            status_code=entry.status_code,
            error_code=entry.error_code,
        )
    )


def _public(row: AuditEntry) -> schemas.AuditEntry:
    return schemas.AuditEntry(
        id=row.id,
        created_at=row.created_at,
        organization_id=row.org_id,
        actor_key_id=row.actor_key_id,
        action=row.action,
        method=row.method,
        path=row.path,
        target_id=row.target_id,
        request_id=row.request_id,
        outcome="success" if row.outcome == "success" else "failure",
        status_code=row.status_code,
        error_code=row.error_code,
    )


def list_entries(
    session: Session,
    *,
    org_id: str | None,
    all_orgs: bool,
    action: str | None,
    limit: int,
    after: str | None,
) -> Page[schemas.AuditEntry]:
    """A tenant sees its own organisation's entries; the operator (`all_orgs`) sees every entry."""
    query = select(AuditEntry)
    if not all_orgs or org_id is not None:
        query = query.where(AuditEntry.org_id == org_id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    return paginate(session, query, AuditEntry.id, limit=limit, after=after, to_public=_public)
