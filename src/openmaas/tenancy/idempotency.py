"""Idempotent creates (`Idempotency-Key`): the same key and body replay the stored response; the
same key with another body is a 409.

The record is inserted in the same transaction as the thing it creates, so either both exist or
neither does. Two concurrent requests with one key race on a unique constraint: the loser reads
the winner's committed record and replays it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.db.database import Database
from openmaas.ids import new_id
from openmaas.tenancy.tables import IdempotencyRecord

Created = tuple[int, Any]  # (status code, JSON-able body)


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"%s %s\n%s" % (method.encode(), path.encode(), body)).hexdigest()


def _replay(record: IdempotencyRecord, fingerprint_: str, key: str) -> Created:
    if record.fingerprint != fingerprint_:
        raise errors.Conflict(
            f"Idempotency-Key {key!r} was already used with a different request.",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )
    return record.status_code or 200, record.response


def run_idempotent(
    db: Database,
    *,
    owner: str,
    key: str | None,
    fingerprint_: str,
    now: datetime,
    ttl: timedelta,
    create: Callable[[Session], Created],
) -> Created:
    if key is None:
        with db.session() as session:
            return create(session)
    if not 1 <= len(key) <= 255:
        raise errors.InvalidRequest("Idempotency-Key must be 1 to 255 characters.", param="Idempotency-Key")
    lookup = select(IdempotencyRecord).where(IdempotencyRecord.owner == owner, IdempotencyRecord.key == key)
    with db.read_session() as session:
        existing = session.scalar(lookup)
        if existing is not None and existing.created_at > now - ttl:
            return _replay(existing, fingerprint_, key)
    try:
        with db.session() as session:
            session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at <= now - ttl))
            record = IdempotencyRecord(
                id=new_id("idem_"), owner=owner, key=key, fingerprint=fingerprint_, created_at=now
            )
            session.add(record)
            session.flush()
            status, body = create(session)
            record.status_code, record.response = status, body
            return status, body
    except IntegrityError:
        with db.read_session() as session:
            existing = session.scalar(lookup)
        if existing is None:
            raise
        return _replay(existing, fingerprint_, key)
