"""The rate limiter of cluster mode: the same token buckets, kept in the database so that every
API server draws from one bucket per key and organisation.

A server does not go to the database for every request. It takes a slice of a bucket (at most an
eighth of what the bucket holds, and at least what the request needs) and admits requests from
its slices in memory; only a request its slices cannot cover goes to the database, which decides
atomically for all the request's buckets: on PostgreSQL one statement on an autocommit connection
locks the rows (`FOR UPDATE` serialises the servers), refills them to now, checks that each holds
what the slice lacks, and takes the slices from all of them or from none; on SQLite one write
transaction does the same. Tokens a request did not use go back into the server's slice, in
memory. Slices unused for `idle_s` go back to their buckets, so little waits unused on one
server while another is refused; a crashed server's slices are simply spent, and the buckets
refill within a minute as they always do.

So the servers together never admit more than the buckets allow. A refusal's `Retry-After` is
when the bucket in the database will hold the whole request, so waiting that long succeeds on any
server; the `x-ratelimit-remaining-*` headers count this server's slice and what the bucket held
when it last looked. A bucket's row is created full on its first request (`INSERT … ON CONFLICT DO
NOTHING`, once per subject and process).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.metering.ratelimit import Decision, Limits, TokenBucket, decision_of, take
from openmaas.metering.settlement import Sql, transaction

log = logging.getLogger("openmaas.metering")

_SHARE = 8  # a slice takes at most 1/8 of what the bucket holds
# Levels in thousandths of a unit. Refill: `cap` units a minute is cap * 1000 / 60e6 milli-units
# a µs. The slice granted: what is lacking, or an eighth of the refilled level if that is more.
_PG_TAKE = """
WITH want AS (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) AS w(subject, kind, cap, lack)
),
refilled AS (
    SELECT b.subject, b.kind, w.lack,
           LEAST(w.cap * 1000, b.level_milli + (%s - b.updated_us) * w.cap / 60000) AS level
    FROM rate_limit_buckets AS b JOIN want AS w USING (subject, kind)
    FOR UPDATE OF b
),
cur AS (SELECT *, GREATEST(lack, level / 8) AS slice FROM refilled),
verdict AS (SELECT bool_and(level >= lack) AS allowed FROM cur),
taken AS (
    UPDATE rate_limit_buckets AS b SET level_milli = cur.level - cur.slice, updated_us = %s
    FROM cur, verdict WHERE verdict.allowed AND b.subject = cur.subject AND b.kind = cur.kind
)
SELECT subject, kind, level, slice FROM cur
"""
_SQLITE_LEVEL = """
SELECT MIN(? * 1000, level_milli + (? - updated_us) * ? / 60000) FROM rate_limit_buckets
WHERE subject = ? AND kind = ?
"""
_SET = "UPDATE rate_limit_buckets SET level_milli = ?, updated_us = ? WHERE subject = ? AND kind = ?"
_CREATE = (
    "INSERT INTO rate_limit_buckets (subject, kind, level_milli, updated_us) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (subject, kind) DO NOTHING"
)
# Giving a slice back: refill to now, add, keep within the capacity.
_GIVE_BACK = """
UPDATE rate_limit_buckets SET
    level_milli = MIN_OF(
        CAST(? AS BIGINT) * 1000,
        MIN_OF(
            CAST(? AS BIGINT) * 1000,
            level_milli + (CAST(? AS BIGINT) - updated_us) * CAST(? AS BIGINT) / 60000
        ) + CAST(? AS BIGINT)
    ),
    updated_us = ?
WHERE subject = ? AND kind = ?
"""


@dataclass
class _Slice:
    """This server's share of one bucket, in milli-units."""

    cap: int
    level: int = 0
    seen: int = 0  # what the bucket held after this server last took from it (for the headers)
    used_at: float = 0.0


class DatabaseRateLimiter:
    def __init__(self, db: Database, clock: Clock, *, idle_s: float = 1.0) -> None:
        self._db = db
        self._clock = clock
        self._idle_s = idle_s
        self._slices: dict[tuple[str, str], _Slice] = {}
        self._created: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._connections: queue.SimpleQueue[Any] = queue.SimpleQueue()  # PostgreSQL: autocommit
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._give_back_sql = _GIVE_BACK.replace("MIN_OF", "MIN" if db.is_sqlite else "LEAST")

    def acquire(self, subjects: list[tuple[str, Limits]], tokens: int) -> Decision:
        wanted = _wanted(subjects, tokens)
        for _ in range(3):
            decision = self.acquire_nowait(subjects, tokens)
            if decision is not None:
                return decision
            decision = self._from_database(wanted, tokens)
            if decision is not None:  # refused by the buckets themselves
                return decision
        # The slices taken were spent by this server's other requests meanwhile, three times over.
        return self._from_database(wanted, tokens, force_verdict=True) or take([], tokens)

    def acquire_nowait(self, subjects: list[tuple[str, Limits]], tokens: int) -> Decision | None:
        """`acquire` from this server's slices alone; None, with nothing taken, when they do not
        cover the request (then `acquire` goes to the database)."""
        wanted = _wanted(subjects, tokens)
        with self._lock:
            slices = [self._slices.get((s, k)) for s, k, _, _ in wanted]
            if not all(_covers(sl, cap, cost) for sl, (_, _, cap, cost) in zip(slices, wanted, strict=True)):
                return None
            pairs = [(kind, _bucket(sl, cap)) for sl, (_, kind, cap, _) in zip(slices, wanted, strict=True)]
            decision = take(pairs, tokens)
            now = self._clock.monotonic()
            for sl, (_, _, _, cost) in zip(slices, wanted, strict=True):
                assert sl is not None
                sl.level -= cost * 1000
                sl.used_at = now
            return decision

    def refund(self, subjects: list[tuple[str, Limits]], tokens: int) -> None:
        """Unused tokens go back into this server's slice (negative: it owes more); no I/O."""
        if not tokens:
            return
        with self._lock:
            for subject, limits in subjects:
                cap = limits.tokens_per_minute
                if cap is None:
                    continue
                sl = self._slices.setdefault((subject, "tokens"), _Slice(cap))
                sl.level = min(sl.level + tokens * 1000, cap * 1000)
        self._start_keeper()

    def give_back(self, idle_s: float = 0.0) -> None:
        """Return every slice unused for `idle_s` seconds to its bucket."""
        now = self._clock.monotonic()
        with self._lock:
            idle = [(key, sl) for key, sl in self._slices.items() if now - sl.used_at >= idle_s]
            for key, _ in idle:
                del self._slices[key]
        if not idle:
            return
        now_us = _now_us(self._clock)
        try:
            with transaction(self._db) as sql:
                for (subject, kind), sl in sorted(idle, key=lambda item: item[0]):
                    sql.run(
                        self._give_back_sql, (sl.cap, sl.cap, now_us, sl.cap, sl.level, now_us, subject, kind)
                    )
        except Exception:
            with self._lock:  # kept here; the next round returns them
                for key, sl in idle:
                    mine = self._slices.setdefault(key, _Slice(sl.cap))
                    mine.level += sl.level
            raise

    def close(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join(10)
        try:
            self.give_back()
        finally:
            while not self._connections.empty():
                self._connections.get_nowait().close()

    def _from_database(
        self, wanted: list[tuple[str, str, int, int]], tokens: int, *, force_verdict: bool = False
    ) -> Decision | None:
        """Take slices covering what this server lacks for the request, all or none. Returns the
        refusal, or None once the slices are in (the caller then takes from them). With
        `force_verdict`, returns the verdict either way and takes the request at once."""
        with self._lock:
            lacks = []
            for subject, kind, cap, cost in wanted:
                sl = self._slices.get((subject, kind))
                have = sl.level if sl is not None and sl.cap == cap else 0
                lacks.append(max(cost * 1000 - have, 0))
        now_us = _now_us(self._clock)
        self._create_missing(wanted, now_us)
        found = self._take_slices(wanted, lacks, now_us)
        if len(found) < len(wanted):  # a bucket's row was deleted since: create it, decide again
            self._created.difference_update((s, k) for s, k, _, _ in wanted)
            self._create_missing(wanted, now_us)
            found = self._take_slices(wanted, lacks, now_us)
        allowed = all(found[(s, k)][0] >= lack for (s, k, _, _), lack in zip(wanted, lacks, strict=True))
        with self._lock:
            now = self._clock.monotonic()
            pairs = []
            for subject, kind, cap, _ in wanted:
                level, granted = found[(subject, kind)]
                sl = self._slices.get((subject, kind))
                if sl is None or sl.cap != cap:
                    sl = self._slices[(subject, kind)] = _Slice(cap)
                if allowed:
                    sl.level += granted
                    sl.seen = level - granted
                else:
                    sl.seen = level
                sl.used_at = now
                pairs.append((kind, sl, cap))
            if allowed and not force_verdict:
                return None
            # A refusal is judged on the bucket alone, so its Retry-After is when the bucket itself
            # will hold the request: honest whichever server the client tries next. The headers
            # count this server's slice as well.
            judged = take([(kind, _bucket(sl, cap, with_slice=allowed)) for kind, sl, cap in pairs], tokens)
            if allowed:  # judged with the slice: already what the headers show
                decision = judged
            else:
                shown = [(kind, _bucket(sl, cap)) for kind, sl, cap in pairs]
                decision = (
                    take(shown, tokens)
                    if judged.allowed
                    else decision_of(
                        shown, allowed=False, limit_type=judged.limit_type, retry_after_s=judged.retry_after_s
                    )
                )
            if decision.allowed:
                for subject, kind, _, cost in wanted:
                    self._slices[(subject, kind)].level -= cost * 1000
        self._start_keeper()
        return decision

    def _take_slices(
        self, wanted: list[tuple[str, str, int, int]], lacks: list[int], now_us: int
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """Per bucket: its refilled level and the slice granted (taken only if every bucket holds
        what is lacking), in milli-units."""
        if self._db.is_sqlite:
            with transaction(self._db) as sql:
                found = {}
                for (subject, kind, cap, _), lack in zip(wanted, lacks, strict=True):
                    row = sql.run(_SQLITE_LEVEL, (cap, now_us, cap, subject, kind)).fetchone()
                    if row is not None:
                        found[(subject, kind)] = (int(row[0]), max(lack, int(row[0]) // _SHARE))
                if len(found) == len(wanted) and all(
                    found[(s, k)][0] >= lack for (s, k, _, _), lack in zip(wanted, lacks, strict=True)
                ):
                    for subject, kind, _, _ in wanted:
                        level, granted = found[(subject, kind)]
                        sql.run(_SET, (level - granted, now_us, subject, kind))
                return found
        columns = [[w[0] for w in wanted], [w[1] for w in wanted], [w[2] for w in wanted], lacks]
        with self._connection() as connection:
            rows = Sql(connection, is_sqlite=False).run(_PG_TAKE, (*columns, now_us, now_us)).fetchall()
        return {(subject, kind): (int(level), int(granted)) for subject, kind, level, granted in rows}

    def _create_missing(self, wanted: list[tuple[str, str, int, int]], now_us: int) -> None:
        missing = [(s, k, cap) for s, k, cap, _ in wanted if (s, k) not in self._created]
        if not missing:
            return
        with transaction(self._db) as sql:
            for subject, kind, cap in missing:
                sql.run(_CREATE, (subject, kind, cap * 1000, now_us))
        self._created.update((s, k) for s, k, _ in missing)

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

    def _start_keeper(self) -> None:
        if self._keeper is None and not self._stop.is_set():
            with self._lock:
                if self._keeper is None:
                    self._keeper = threading.Thread(target=self._keep, name="ratelimit-slices", daemon=True)
                    self._keeper.start()

    def _keep(self) -> None:
        while not self._stop.wait(self._idle_s):
            try:
                self.give_back(self._idle_s)
            except Exception:
                log.exception("returning rate-limit slices failed; will retry")


def _covers(sl: _Slice | None, cap: int, cost: int) -> bool:
    return sl is not None and sl.cap == cap and sl.level >= cost * 1000


def _bucket(sl: _Slice | None, cap: int, *, with_slice: bool = True) -> TokenBucket:
    """What this server knows of a bucket: what it held when last seen, plus this server's slice."""
    bucket = TokenBucket(cap, 0.0)
    if sl is not None:
        bucket.level = min(((sl.level if with_slice else 0) + sl.seen) / 1000, float(cap))
    return bucket


def _now_us(clock: Clock) -> int:
    return int(clock.now().timestamp() * 1e6)


def _wanted(subjects: list[tuple[str, Limits]], tokens: int) -> list[tuple[str, str, int, int]]:
    """(subject, kind, capacity, cost) per bucket the request draws from."""
    return [
        (subject, kind, limit, 1 if kind == "requests" else min(tokens, limit))
        for subject, limits in subjects
        for kind, limit in (("requests", limits.requests_per_minute), ("tokens", limits.tokens_per_minute))
        if limit is not None
    ]
