"""The usage ledger's writer: group commit of usage events, exactly once, settled with budgets.

`UsageLedger.record(event)` is THE hook for everything billable (serving, training, data). It
prices the event, queues it, and returns a `Receipt`; waiting on the receipt returns once the
event is durable, so a request's response can complete only after its usage is written.

One background thread takes every queued event (up to `max_batch`) and writes them in one
transaction: `INSERT … ON CONFLICT (event_id) DO NOTHING` on SQLite and PostgreSQL alike,
so the database's unique key, at the write, is what makes a retried event a no-op — there is no
"seen it" check before the write that a failed write could poison. In the same transaction each
event's budget hold is released, the metered cost is added to its organisation's account (and
key budget), and the inserted events are added to the hourly sums that reports and invoices read
(`metering/hourly.py`), so spend, sums and ledger never disagree, also after a crash. A failed transaction is
retried with backoff, never dropped; while it fails, the bounded queue fills and `record` answers
`ServiceUnavailable` instead of growing memory.

While writes fail (the database is down) the ledger says so (`unavailable`): the usage gate then
refuses new requests with 503 at once, rather than serving them and holding their answers until
the metering wait runs out. The retry backoff stays short (at most `max_retry_delay_s`), so that
the first write after the database returns comes within a second and closes the gate again. A
request whose wait runs out withdraws its event (see `receipts`): it is refused, not billed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from openmaas import errors
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.histogram import Histogram
from openmaas.metering import settlement
from openmaas.metering.events import PricedLine, UsageEvent
from openmaas.metering.hourly import DayBuckets, HourBuckets, HourlySums
from openmaas.metering.pricing_events import price_event
from openmaas.metering.receipts import Completions, Receipt, Written
from openmaas.metering.tables import UNIT_COLUMNS
from openmaas.pricing.periods import period_bounds, period_of
from openmaas.pricing.source import PriceSource

log = logging.getLogger("openmaas.metering")

WRITE_SECONDS_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class UsageLedger:
    def __init__(
        self,
        db: Database,
        prices: PriceSource,
        clock: Clock,
        *,
        max_queue: int = 100_000,
        max_batch: int = 2_000,
        linger_s: float = 0.0,
        retry_delay_s: float = 0.05,
        max_retry_delay_s: float = 1.0,
        sweep: Callable[[], int] | None = None,
        sweep_interval_s: float = 30.0,
        wait_timeout_s: float = 30.0,
    ) -> None:
        self._db = db
        self._prices = prices
        self._clock = clock
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._retry_delay_s = retry_delay_s
        self._max_retry_delay_s = max_retry_delay_s
        self._sweep = sweep
        self._sweep_interval_s = sweep_interval_s
        self._wait_timeout_s = wait_timeout_s
        self._swept_at = clock.monotonic()
        # A deque and an Event rather than `queue.Queue`: appending is one atomic call, and the
        # writer is woken only when it sleeps (a Queue takes a lock and notifies on every event).
        self._pending: deque[Receipt | None] = deque()
        self._completions = Completions()
        self._max_queue = max_queue
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._connection: Any = None  # the writer thread's DBAPI connection
        # For `/metrics`, written by the writer thread only: each batch's write time (retries
        # included), the events written, and the failed tries.
        self.write_seconds = Histogram(WRITE_SECONDS_BOUNDS)
        self.events_written = 0
        self.write_failures = 0
        # Set by the writer when a write fails, cleared when one succeeds.
        self.unavailable = False

    def record(self, event: UsageEvent) -> Receipt:
        """Queue `event` for the ledger; wait on the returned receipt before answering the client."""
        if self._closed:
            raise errors.ServiceUnavailable("The usage ledger is shutting down.", retry_after=5)
        self._ensure_started()
        lines = price_event(self._prices, event)
        receipt = Receipt(event, lines, self._completions, self._wait_timeout_s)
        if len(self._pending) >= self._max_queue:  # may pass by a few under concurrency: a soft bound
            raise errors.ServiceUnavailable("The usage ledger is backed up; retry shortly.", retry_after=1)
        self._pending.append(receipt)
        if not self._wakeup.is_set():
            self._wakeup.set()
        return receipt

    def start(self) -> None:
        """Start the writer now rather than at the first event: it also sweeps the budget holds of
        crashed servers, which a worker should do from its start."""
        self._ensure_started()

    def record_and_wait(self, event: UsageEvent, timeout: float | None = None) -> Written:
        return self.record(event).wait(timeout)

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking events, write what is queued, and stop the writer."""
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._pending.append(None)
            self._wakeup.set()
            thread.join(timeout)
        if self._connection is not None and (thread is None or not thread.is_alive()):
            self._connection.close()
            self._connection = None

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="usage-ledger", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        stopping = False
        while not stopping:
            self._sweep_if_due()
            if not self._pending:
                self._wakeup.clear()
                if not self._pending:  # re-checked after the clear, so no wake-up is lost
                    self._wakeup.wait(self._sweep_interval_s)
                    continue
            if self._linger_s and len(self._pending) < self._max_batch:
                time.sleep(self._linger_s)
            batch, stopping = self._take_batch()
            if batch:
                self._write_until_done(batch)

    def _take_batch(self) -> tuple[list[Receipt], bool]:
        """Up to `max_batch` queued events, and whether the stop sign came with them."""
        batch: list[Receipt] = []
        stopping = False
        while len(batch) < self._max_batch and self._pending:
            item = self._pending.popleft()
            if item is None:
                stopping = True
            else:
                batch.append(item)
        return batch, stopping

    def _sweep_if_due(self) -> None:
        """Between batches: release budget holds that crashed servers left behind."""
        if self._sweep is None or self._clock.monotonic() - self._swept_at < self._sweep_interval_s:
            return
        self._swept_at = self._clock.monotonic()
        try:
            released = self._sweep()
        except Exception:
            log.exception("releasing expired budget holds failed; will retry")
            return
        if released:
            log.warning("released %d expired budget holds (requests whose server stopped)", released)

    def _write_until_done(self, batch: list[Receipt]) -> None:
        delay = self._retry_delay_s
        started = time.perf_counter()
        completions = self._completions
        withdrawn: list[Receipt] = []  # by requests that gave up waiting: never written
        written: list[Written] = []
        while True:
            batch, dropped = completions.begin_attempt(batch)
            withdrawn += dropped
            if not batch and not self.unavailable:
                break
            try:
                # Every event withdrawn while the database was down: the gate stays closed (no new
                # events come) until the database answers again.
                written = self._write(batch) if batch else self._probe()
            except Exception:
                completions.end_attempt()
                self.unavailable = True
                self.write_failures += 1
                log.exception("writing %d usage events failed; retrying in %.2fs", len(batch), delay)
                time.sleep(delay)
                delay = min(delay * 2, self._max_retry_delay_s)
                continue
            self.unavailable = False
            self.write_seconds.observe(time.perf_counter() - started)
            self.events_written += len(batch)
            break
        if withdrawn:
            batch = batch + withdrawn
            written = written + [Written(r.event.event_id, False, 0) for r in withdrawn]
        completions.resolve(batch, written)

    def _write(self, batch: list[Receipt]) -> list[Written]:
        if not self._db.is_sqlite:
            written = self._write_in_one_statement(batch)
            if written is not None:
                return written
        with self._transaction() as sql:
            return write_batch(sql, self._prices, self._clock.now(), batch)

    def _write_in_one_statement(self, batch: list[Receipt]) -> list[Written] | None:
        """PostgreSQL's common batch (distinct ids, one billing month per organisation and key, no
        single-request hold to release; budget leases are fine) as one autocommitted statement:
        each statement costs the driver about 0.1 ms, and a transaction of five was most of a
        request's metering latency. None: not such a batch, write it in a transaction."""
        periods = _Periods(self._prices)
        hours = HourBuckets(self._timezone_of, settlement.Sql.pg_time)
        days = DayBuckets(self._timezone_of, settlement.Sql.pg_time)
        of_org: dict[str, str] = {}
        of_key: dict[str, str] = {}
        event_periods = []
        event_hours = []
        leases: list[str | None] = []
        for p in batch:
            e = p.event
            period = periods.of(e.org_id, e.occurred_at)
            hold = e.hold
            lease = None
            if hold is not None and hold.hold_id is not None:
                if not hold.lease:
                    return None
                lease = hold.hold_id
            if of_org.setdefault(e.org_id, period) != period:
                return None
            if e.api_key_id is not None and of_key.setdefault(e.api_key_id, period) != period:
                return None
            event_periods.append(period)
            event_hours.append((hours.of(e.org_id, e.occurred_at), *days.of(e.org_id, e.occurred_at)))
            leases.append(lease)
        if len({p.event.event_id for p in batch}) != len(batch):
            return None
        connection = self._connect()
        try:
            sql = settlement.Sql(connection, is_sqlite=False)
            inserted = settlement.insert_and_spend(
                sql, ledger_rows(sql, self._clock.now(), batch), event_periods, leases, event_hours
            )
        except BaseException:
            self._connection = None
            connection.close()
            raise
        if inserted is None:
            return [Written(p.event.event_id, True, p.cost_micros) for p in batch]
        return _claim_lines(batch, inserted)

    def _probe(self) -> list[Written]:
        """Ask the database for nothing, on the writer's connection: does it answer again?"""
        connection = self._connect()
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
        except BaseException:
            self._connection = None
            connection.close()
            raise
        return []

    def _timezone_of(self, org_id: str) -> str:
        return self._prices.profile(org_id).timezone

    def _connect(self) -> Any:
        """The writer's own connection, held for its lifetime (the hot path skips the ORM session
        and the pool). On PostgreSQL it is taken out of the pool and set to autocommit: single
        statements commit on their own and transactions begin explicitly."""
        if self._connection is None:
            connection: Any = self._db.engine.raw_connection()
            if not self._db.is_sqlite:
                connection.dbapi_connection.autocommit = True
                connection.detach()  # never handed back to the pool in autocommit
            self._connection = connection
        return self._connection

    @contextmanager
    def _transaction(self) -> Iterator[settlement.Sql]:
        """A write transaction on the writer's own connection, held for its lifetime (the hot path
        skips the ORM session and the pool); a failure drops the connection and the batch retries."""
        connection = self._connect()
        try:
            with settlement.transaction(self._db, connection) as sql:
                yield sql
        except BaseException:
            self._connection = None  # closed by `transaction`
            raise


class Priced(Protocol):
    """An event with its priced lines and their total: a `Receipt`, or what `record_in` writes."""

    @property
    def event(self) -> UsageEvent: ...
    @property
    def lines(self) -> tuple[PricedLine, ...]: ...
    @property
    def cost_micros(self) -> int: ...


class _Priced(NamedTuple):
    event: UsageEvent
    lines: tuple[PricedLine, ...]
    cost_micros: int


def record_in(sql: settlement.Sql, prices: PriceSource, clock: Clock, event: UsageEvent) -> Written:
    """Meter `event` inside the caller's transaction rather than through the writer's queue: for
    usage that must commit with what it bills for (a job's result) or not at all. The event id
    still decides: a retried job that wrote it already meters nothing. No budget hold is taken or
    settled here (the event must carry none)."""
    if event.hold is not None:
        raise ValueError("record_in writes events without a budget hold")
    lines = price_event(prices, event)
    priced = _Priced(event, lines, sum(line.cost_micros for line in lines))
    return write_batch(sql, prices, clock.now(), [priced])[0]


def write_batch(
    sql: settlement.Sql, prices: PriceSource, now: datetime, batch: Sequence[Priced]
) -> list[Written]:
    """Write priced events in the caller's transaction: insert the new ones, settle their holds and
    spend, and add them to the hourly and daily sums."""
    rows = ledger_rows(sql, now, batch)
    inserted = settlement.insert_new(sql, rows)
    periods = _Periods(prices)

    def timezone_of(org_id: str) -> str:
        return prices.profile(org_id).timezone

    hours = HourBuckets(timezone_of, sql.time)
    days = DayBuckets(timezone_of, sql.time)
    spend = settlement.Spend()
    hourly = HourlySums()
    if inserted is None:  # the common case: every row was new
        written = [Written(p.event.event_id, True, p.cost_micros) for p in batch]
    else:
        written = _claim_lines(batch, inserted)
    for p, outcome in zip(batch, written, strict=True):
        e = p.event
        spend.add(e, periods.of(e.org_id, e.occurred_at), outcome.cost_micros)
        if outcome.new:  # keyed as `HOURLY_DIMENSIONS`
            hour = hours.of(e.org_id, e.occurred_at)
            day = days.of(e.org_id, e.occurred_at)
            ref = p.lines[0].price_ref
            hourly.add(
                (e.org_id, hour, day, e.model, e.api_key_id, e.deployment, e.resource_class, ref), p.lines
            )
    settlement.apply(sql, spend)
    hourly.write(sql)
    return written


def ledger_rows(sql: settlement.Sql, now: datetime, batch: Sequence[Priced]) -> list[tuple[Any, ...]]:
    """The batch's ledger rows (one per event), times already in the database's format."""
    recorded_at = sql.time(now)
    rows = []
    for p in batch:
        e = p.event
        units = dict.fromkeys(UNIT_COLUMNS)
        for line in p.lines:
            units[f"qty_{line.unit}"] = line.quantity
            units[f"cost_{line.unit}"] = line.cost_micros
        first = p.lines[0]
        rows.append(
            (
                e.event_id,
                e.org_id,
                e.api_key_id,
                e.model,
                e.deployment,
                e.resource_class,
                sql.time(e.occurred_at),
                p.cost_micros,
                first.price_ref,
                first.seller_org_id,
                recorded_at,
                *units.values(),
            )
        )
    return rows


def _claim_lines(batch: Sequence[Priced], inserted: set[str]) -> list[Written]:
    """Which events were new, when some were not (a retry, or an id twice in a batch)."""
    written = []
    for p in batch:
        event_id = p.event.event_id
        new = event_id in inserted
        inserted.discard(event_id)  # consumed as claimed: the same id twice in a batch meters once
        written.append(Written(event_id, new, p.cost_micros if new else 0))
    return written


class _Periods:
    """Each organisation's billing month of an instant, computed once per month and batch (the
    zone conversion per event was a large part of a batch's Python time)."""

    __slots__ = ("_months", "_prices")

    def __init__(self, prices: PriceSource) -> None:
        self._prices = prices
        self._months: dict[str, tuple[datetime, datetime, str]] = {}

    def of(self, org_id: str, at: datetime) -> str:
        known = self._months.get(org_id)
        if known is not None and known[0] <= at < known[1]:
            return known[2]
        period = period_of(at, timezone := self._prices.profile(org_id).timezone)
        start, end = period_bounds(period, timezone)
        self._months[org_id] = (start, end, period)
        return period
