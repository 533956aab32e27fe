"""Stored Responses API answers, per organisation, for `previous_response_id` and
`GET`/`DELETE /v1/responses/{id}`: each is kept `ttl_s` (a setting, 30 days by default). An expired
one is never served; each save deletes the expired ones (one indexed delete), so the table holds
no more than the last `ttl_s` of answers without a separate sweeper.

Blocking database work: the service calls these off the event loop.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import delete, select

from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.serving.tables import StoredResponse


class Stored(NamedTuple):
    items: list[dict[str, Any]]  # the conversation's input items up to this answer
    response: dict[str, Any]  # the response object


class ResponseStore:
    def __init__(self, db: Database, clock: Clock, *, ttl_s: float) -> None:
        self._db = db
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_s)

    def save(self, org_id: str, items: list[dict[str, Any]], response: dict[str, Any]) -> None:
        now = self._clock.now()
        with self._db.session() as session:
            session.execute(delete(StoredResponse).where(StoredResponse.expires_at <= now))
            session.add(
                StoredResponse(
                    id=response["id"],
                    org_id=org_id,
                    created_at=now,
                    expires_at=now + self._ttl,
                    items=items,
                    response=response,
                )
            )

    def load(self, org_id: str, response_id: str) -> Stored | None:
        """The organisation's stored answer, None if unknown, another's, or expired."""
        query = select(StoredResponse.items, StoredResponse.response).where(
            StoredResponse.id == response_id,
            StoredResponse.org_id == org_id,
            StoredResponse.expires_at > self._clock.now(),
        )
        with self._db.read_session() as session:
            row = session.execute(query).one_or_none()
        return None if row is None else Stored(row.items, row.response)

    def delete(self, org_id: str, response_id: str) -> bool:
        with self._db.session() as session:
            deleted = session.execute(
                delete(StoredResponse).where(
                    StoredResponse.id == response_id,
                    StoredResponse.org_id == org_id,
                    StoredResponse.expires_at > self._clock.now(),
                )
            )
        return bool(getattr(deleted, "rowcount", 0))
