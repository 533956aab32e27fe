"""The rate limiter of cluster mode: the same token buckets, kept in the database so that every
API server draws from one bucket per key and organisation.

A decision locks the caller's bucket rows, refills them to now, checks them all and takes from
all of them or none, atomically: on PostgreSQL in one statement on an autocommit connection (one
round trip; `FOR UPDATE` serialises the servers), on SQLite in one write transaction. A bucket's
row is created full on its first request (`INSERT … ON CONFLICT DO NOTHING`, once per subject
and process). The decision's headers come from the levels the database saw, through the same
`take` as the in-memory limiter.

Refunds (a request used fewer tokens than it reserved) only ever give back, so they need not be
synchronous: they are summed per bucket and written by a background thread within `flush_s`,
in one statement, off the request's path (`complete` runs on the event loop). Until then a bucket
looks emptier than it is, so a `Retry-After` stays honest: waiting that long still succeeds.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.metering.ratelimit import Decision, Limits, TokenBucket, take
from openmaas.metering.settlement import Sql, transaction

log = logging.getLogger("openmaas.metering")

# Refill in thousandths of a unit: `cap` units a minute is cap * 1000 / 60e6 milli-units a µs.
_REFILLED = "LEAST(w.cap * 1000, b.level_milli + (%s - b.updated_us) * w.cap / 60000)"
_PG_TAKE = f"""
WITH want AS (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) AS w(subject, kind, cap, cost)
),
cur AS (
    SELECT b.subject, b.kind, w.cost, {_REFILLED} AS level
    FROM rate_limit_buckets AS b JOIN want AS w USING (subject, kind)
    FOR UPDATE OF b
),
verdict AS (SELECT bool_and(level >= cost * 1000) AS allowed FROM cur),
taken AS (
    UPDATE rate_limit_buckets AS b SET level_milli = cur.level - cur.cost * 1000, updated_us = %s
    FROM cur, verdict WHERE verdict.allowed AND b.subject = cur.subject AND b.kind = cur.kind
)
SELECT subject, kind, level FROM cur
"""
_SQLITE_TAKE = """
SELECT b.subject, b.kind, MIN(? * 1000, b.level_milli + (? - b.updated_us) * ? / 60000)
FROM rate_limit_buckets AS b WHERE b.subject = ? AND b.kind = ?
"""
_CREATE = (
    "INSERT INTO rate_limit_buckets (subject, kind, level_milli, updated_us) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (subject, kind) DO NOTHING"
)
_REFUND = (
    "UPDATE rate_limit_buckets SET level_milli = CASE WHEN level_milli + ? > ? * 1000 THEN ? * 1000 "
    "ELSE level_milli + ? END WHERE subject = ? AND kind = ?"
)

Wanted = list[tuple[str, str, int, int]]  # (subject, kind, capacity, cost) per bucket


class DatabaseRateLimiter:
    in_memory = False

    def __init__(self, db: Database, clock: Clock, *, flush_s: float = 0.02) -> None:
        self._db = db
        self._clock = clock
        self._flush_s = flush_s
        self._connections: queue.SimpleQueue[Any] = queue.SimpleQueue()  # PostgreSQL: autocommit
        self._created: set[tuple[str, str]] = set()
        self._refunds: dict[tuple[str, str, int], int] = defaultdict(int)  # (subject, kind, cap) → milli
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._flusher: threading.Thread | None = None
        self._closed = False

    def acquire(self, subjects: list[tuple[str, Limits]], tokens: int) -> Decision:
        wanted = _wanted(subjects, tokens)
        if not wanted:
            return take([], tokens)
        now_us = int(self._clock.now().timestamp() * 1e6)
        self._create_missing(wanted, now_us)
        levels = self._take(wanted, now_us)
        if len(levels) < len(wanted):  # a bucket's row was deleted since: create it, decide again
            self._created.difference_update((s, k) for s, k, _, _ in wanted)
            self._create_missing(wanted, now_us)
            levels = self._take(wanted, now_us)
        pairs = []
        for subject, kind, cap, _ in wanted:
            bucket = TokenBucket(cap, 0.0)
            bucket.level = levels[(subject, kind)] / 1000
            pairs.append((kind, bucket))
        return take(pairs, tokens)  # the same verdict the database reached, with its headers

    def refund(self, subjects: list[tuple[str, Limits]], tokens: int) -> None:
        """Give tokens back (negative: take more), written within `flush_s`; never blocks."""
        if not tokens:
            return
        with self._lock:
            for subject, limits in subjects:
                if limits.tokens_per_minute is not None:
                    self._refunds[(subject, "tokens", limits.tokens_per_minute)] += tokens * 1000
            self._start_flusher()
        self._wakeup.set()

    def flush(self) -> None:
        """Write the refunds summed so far."""
        with self._lock:
            refunds, self._refunds = self._refunds, defaultdict(int)
        if not refunds:
            return
        try:
            with transaction(self._db) as sql:
                for (subject, kind, cap), milli in sorted(refunds.items()):
                    sql.run(_REFUND, (milli, cap, cap, milli, subject, kind))
        except Exception:
            with self._lock:  # kept for the next flush
                for key, milli in refunds.items():
                    self._refunds[key] += milli
            raise

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._flusher is not None:
            self._flusher.join(10)
        self.flush()
        while not self._connections.empty():
            self._connections.get_nowait().close()

    def _create_missing(self, wanted: Wanted, now_us: int) -> None:
        missing = [(s, k, cap) for s, k, cap, _ in wanted if (s, k) not in self._created]
        if not missing:
            return
        with transaction(self._db) as sql:
            for subject, kind, cap in missing:
                sql.run(_CREATE, (subject, kind, cap * 1000, now_us))
        self._created.update((s, k) for s, k, _ in missing)

    def _take(self, wanted: Wanted, now_us: int) -> dict[tuple[str, str], int]:
        """Lock, refill, check and (if every bucket has enough) take; the refilled levels before
        taking, in milli-units."""
        if self._db.is_sqlite:
            with transaction(self._db) as sql:
                levels = {}
                for subject, kind, cap, _ in wanted:
                    row = sql.run(_SQLITE_TAKE, (cap, now_us, cap, subject, kind)).fetchone()
                    if row is not None:
                        levels[(subject, kind)] = int(row[2])
                if len(levels) == len(wanted) and all(levels[(s, k)] >= c * 1000 for s, k, _, c in wanted):
                    for subject, kind, _, cost in wanted:
                        sql.run(
                            "UPDATE rate_limit_buckets SET level_milli = ?, updated_us = ? "
                            "WHERE subject = ? AND kind = ?",
                            (levels[(subject, kind)] - cost * 1000, now_us, subject, kind),
                        )
                return levels
        columns = [list(column) for column in zip(*wanted, strict=True)]
        with self._connection() as connection:
            rows = Sql(connection, is_sqlite=False).run(_PG_TAKE, (*columns, now_us, now_us)).fetchall()
        return {(subject, kind): int(level) for subject, kind, level in rows}

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """An autocommit connection of this limiter's own (taken out of the pool), one per
        concurrent caller; a failed one is closed, not reused."""
        connection: Any
        try:
            connection = self._connections.get_nowait()
        except queue.Empty:
            connection = self._db.engine.raw_connection()
            connection.dbapi_connection.autocommit = True
            connection.detach()
        try:
            yield connection
        except BaseException:
            connection.close()
            raise
        self._connections.put(connection)

    def _start_flusher(self) -> None:
        if self._flusher is None and not self._closed:
            self._flusher = threading.Thread(target=self._flush_loop, name="ratelimit-refunds", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._closed:
            self._wakeup.wait()
            self._wakeup.clear()
            if self._closed:
                return
            self._wakeup.wait(self._flush_s)  # gather what else comes in the meantime
            try:
                self.flush()
            except Exception:
                log.exception("writing rate-limit refunds failed; will retry")


def _wanted(subjects: list[tuple[str, Limits]], tokens: int) -> Wanted:
    return [
        (subject, kind, limit, 1 if kind == "requests" else min(tokens, limit))
        for subject, limits in subjects
        for kind, limit in (("requests", limits.requests_per_minute), ("tokens", limits.tokens_per_minute))
        if limit is not None
    ]
