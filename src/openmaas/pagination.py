"""Cursor pagination for every list: newest first (or oldest first, `ascending`), `limit`, `after`
(an id), `has_more`.

Ids are time-ordered (see `ids.py`), so the id alone is a stable cursor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from openmaas.schemas.pages import Page

P = TypeVar("P", bound=BaseModel)


def paginate(
    session: Session,
    query: Select[Any],
    id_column: InstrumentedAttribute[str],
    *,
    limit: int,
    after: str | None,
    to_public: Callable[[Any], P] | None = None,
    to_publics: Callable[[Sequence[Any]], list[P]] | None = None,
    ascending: bool = False,
) -> Page[P]:
    """Newest first (`ascending`: oldest first). `to_public` shapes each row; `to_publics` the
    page's rows at once (one query for what they all need, not one per row)."""
    if after is not None:
        query = query.where(id_column > after if ascending else id_column < after)
    order = id_column.asc() if ascending else id_column.desc()
    rows: Sequence[Any] = session.scalars(query.order_by(order).limit(limit + 1)).all()
    if to_publics is not None:
        items = to_publics(rows[:limit])
    else:
        assert to_public is not None
        items = [to_public(row) for row in rows[:limit]]
    ids = [row.id for row in rows[:limit]]
    return Page[P](
        data=items,
        first_id=ids[0] if ids else None,
        last_id=ids[-1] if ids else None,
        has_more=len(rows) > limit,
    )
