"""Failed served requests, counted per organisation, hour, deployment and key
(`request_failure_hours`): what the console's error rate divides by the metered requests. Never
billed: they are not usage events and no price applies.

A failure is a request admitted at the usage gate whose run then failed on the server's side
(an exception that is not a client's mistake: a crashed or timed-out replica, a model error,
a replica swapped away twice). Not counted: a refusal before admission (401/403/404/429/402, a
bad body), a 4xx raised while running (the caller's mistake, found late), a client that went
away. Hours are the organisation's local hours (`hourly.hour_start`), as `usage_hours`, so its
days and months are whole hours.

Served requests never touch this: `add` runs on the failure path only, appends to a list and
starts at most one writer thread, which writes everything pending in one transaction per round.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.metering.hourly import hour_start
from openmaas.metering.tables import RequestFailureHour

log = logging.getLogger(__name__)


class FailureCounter:
    def __init__(self, db: Database, clock: Clock, timezone_of: Callable[[str], str]) -> None:
        self._db = db
        self._clock = clock
        self._timezone_of = timezone_of
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str, str, datetime]] = []
        self._writer: threading.Thread | None = None

    def add(self, org_id: str, api_key_id: str | None, deployment: str | None) -> None:
        """One failed request, now; written soon by a background thread."""
        with self._lock:
            self._pending.append((org_id, api_key_id or "", deployment or "", self._clock.now()))
            if self._writer is None:
                self._start_writer()

    def _start_writer(self) -> None:
        """Under the lock."""
        self._writer = threading.Thread(target=self._write_all, name="failure-counter", daemon=True)
        self._writer.start()

    def flush(self) -> None:
        """Write what is pending and wait for it (tests, shutdown)."""
        with self._lock:
            writer = self._writer
        if writer is not None:
            writer.join()
        self._write_round()

    def _write_all(self) -> None:
        try:
            while self._write_round():
                pass
        finally:
            with self._lock:
                self._writer = None
                if self._pending:  # added after the last round looked
                    self._writer = threading.Thread(
                        target=self._write_all, name="failure-counter", daemon=True
                    )
                    self._writer.start()

    def _write_round(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return False
        counts = Counter(
            (org_id, hour_start(at, self._timezone_of(org_id)), deployment, key)
            for org_id, key, deployment, at in pending
        )
        rows = [
            {"org_id": o, "hour_start": h, "deployment": d, "api_key_id": k, "failures": n}
            for (o, h, d, k), n in sorted(counts.items())
        ]
        insert = sqlite_insert if self._db.is_sqlite else pg_insert
        statement = insert(RequestFailureHour).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=["org_id", "hour_start", "deployment", "api_key_id"],
            set_={"failures": RequestFailureHour.failures + statement.excluded.failures},
        )
        try:
            with self._db.session() as session:
                session.execute(statement)
        except Exception:  # a count, not a bill: logged, never retried into the request path
            log.exception("writing %d failed-request counts failed", len(pending))
        return True


def failures_between(session: object, org_id: str, start: datetime, end: datetime) -> int:
    """`org_id`'s failed requests in the hours that start in [start, end) (whole local hours)."""
    query = select(func.coalesce(func.sum(RequestFailureHour.failures), 0)).where(
        RequestFailureHour.org_id == org_id,
        RequestFailureHour.hour_start >= start,
        RequestFailureHour.hour_start < end,
    )
    return int(session.scalar(query))  # type: ignore[attr-defined]
