"""The rate limiter of cluster mode: the same token buckets, kept in the database so that every
API server draws from one bucket per key and organisation.

Each decision is one short write transaction: the caller's bucket rows are locked (`FOR UPDATE`
on PostgreSQL; SQLite's write lock), refilled, checked and written back, all or nothing. It costs
a database round trip per request, which is the price of limits that hold across servers; the
embedded mode uses `InMemoryRateLimiter`.
"""

from __future__ import annotations

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.metering.models import RateLimitBucket
from openmaas.metering.ratelimit import Decision, Limits, TokenBucket, take


class DatabaseRateLimiter:
    in_memory = False

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def acquire(self, subjects: list[tuple[str, Limits]], tokens: int) -> Decision:
        for attempt in range(3):
            try:
                with self._db.session() as session:
                    pairs, rows = self._load(session, subjects)
                    decision = take(pairs, tokens)
                    if decision.allowed:
                        self._store(pairs, rows)
                    return decision
            except IntegrityError:  # another server created the same new bucket first
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def refund(self, subjects: list[tuple[str, Limits]], tokens: int) -> None:
        if not tokens:
            return
        with self._db.session() as session:
            pairs, rows = self._load(session, subjects)
            for kind, bucket in pairs:
                if kind == "tokens":
                    bucket.level = min(float(bucket.capacity), bucket.level + tokens)
            self._store(pairs, rows)

    def _load(
        self, session: Session, subjects: list[tuple[str, Limits]]
    ) -> tuple[list[tuple[str, TokenBucket]], list[RateLimitBucket]]:
        now = self._clock.now().timestamp()
        wanted = [
            (subject, kind, limit)
            for subject, limits in subjects
            for kind, limit in (
                ("requests", limits.requests_per_minute),
                ("tokens", limits.tokens_per_minute),
            )
            if limit is not None
        ]
        if not wanted:
            return [], []
        keys = [(subject, kind) for subject, kind, _ in wanted]
        query = select(RateLimitBucket).where(tuple_(RateLimitBucket.subject, RateLimitBucket.kind).in_(keys))
        if not self._db.is_sqlite:
            query = query.with_for_update()
        found = {(row.subject, row.kind): row for row in session.scalars(query)}
        pairs, rows = [], []
        for subject, kind, limit in wanted:
            row = found.get((subject, kind))
            if row is None:  # a first request: a full bucket (a concurrent first insert conflicts → retry)
                row = RateLimitBucket(
                    subject=subject, kind=kind, level_milli=limit * 1000, updated_us=int(now * 1e6)
                )
                session.add(row)
            bucket = TokenBucket(limit, row.updated_us / 1e6)
            bucket.capacity = limit
            bucket.level = row.level_milli / 1000
            bucket.refill(now, limit)
            pairs.append((kind, bucket))
            rows.append(row)
        return pairs, rows

    @staticmethod
    def _store(pairs: list[tuple[str, TokenBucket]], rows: list[RateLimitBucket]) -> None:
        for (_, bucket), row in zip(pairs, rows, strict=True):
            row.level_milli = int(bucket.level * 1000)
            row.updated_us = int(bucket.updated * 1e6)
