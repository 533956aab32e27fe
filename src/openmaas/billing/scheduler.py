"""The billing scheduler: the chores no request triggers, run by every API server and every
`openmaas worker` process.

Each time slot (`interval_s`, on the injectable clock) it samples yesterday's storage of every
organisation in its own time zone (one GB-month share per organisation and day) and then finalises
every month that has ended in its organisation's time zone, `finalize_grace_s` after the end so
usage still queued at the boundary lands first.

Several processes run the scheduler; one of them does a slot's chores. The slot is claimed with one
conditional UPDATE of the `billing_chores` row (`… SET slot = :slot WHERE slot < :slot`), which the
database serialises (SQLite's write lock, PostgreSQL's row lock and re-check). Both chores are
idempotent on their own as well, so running them again does nothing more: storage events are keyed
by organisation and day in the ledger, invoices are unique by organisation and month. A slot whose
server failed half-way is caught up by the next slot: each run samples every organisation that
has no sample for its yesterday yet and finalises every ended month without an invoice.

`run_due()` is what a test calls after moving its clock; `start()` runs it in a thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from openmaas import logs
from openmaas.billing import invoices
from openmaas.billing.tables import BillingChore
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.metering.ledger import UsageLedger
from openmaas.metering.sources import storage_event_id, storage_usage, yesterday
from openmaas.metering.tables import UsageRecord
from openmaas.pricing.periods import zone
from openmaas.storage import ArtifactStore
from openmaas.tenancy.tables import Organization

log = logging.getLogger("openmaas.billing.scheduler")

CHORE = "billing"  # one claim for both chores: the sample must land before the month is closed


@dataclass
class ChoreRun:
    """What one `run_due` did: `claimed` is False when the slot was already run (here or elsewhere)."""

    slot: str
    claimed: bool
    sampled: list[str] = field(default_factory=list)  # storage event ids newly written
    finalized: list[str] = field(default_factory=list)  # invoice ids


class BillingScheduler:
    def __init__(
        self,
        db: Database,
        ledger: UsageLedger,
        store: ArtifactStore,
        clock: Clock,
        *,
        currency: str,
        interval_s: float,
        finalize_grace_s: float,
    ) -> None:
        self._db = db
        self._ledger = ledger
        self._store = store
        self._clock = clock
        self._currency = currency
        self._interval_s = interval_s
        self._grace = timedelta(seconds=finalize_grace_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_due(self) -> ChoreRun:
        """Run this slot's chores unless another run (here or on another server) already did."""
        now = self._clock.now()
        run = ChoreRun(slot_of(now, self._interval_s), claimed=False)
        with self._db.session() as session:
            run.claimed = claim(session, CHORE, run.slot, now)
        if not run.claimed:
            return run
        run.sampled = self._sample_storage(now)
        with self._db.session() as session:
            run.finalized = invoices.finalize_due(
                session, now=now, currency=self._currency, ended_before=now - self._grace
            )
        for invoice_id in run.finalized:  # committed
            logs.event(log, "invoice_finalized", invoice_id=invoice_id, slot=run.slot)
        return run

    def _sample_storage(self, now: datetime) -> list[str]:
        """Record yesterday's storage of every organisation not sampled for it yet; wait until durable."""
        with self._db.read_session() as session:
            due: dict[str, tuple[str, date, str]] = {}  # event id → (org, its yesterday, its zone)
            for org in session.scalars(select(Organization).order_by(Organization.id)):
                day = yesterday(now, org.timezone)
                if org.created_at.astimezone(zone(org.timezone)).date() <= day:
                    due[storage_event_id(org.id, day)] = (org.id, day, org.timezone)
            done = _existing(session, list(due))
        receipts = []
        for event_id, (org_id, day, timezone) in due.items():
            nbytes = 0 if event_id in done else stored_bytes(self._store, org_id)
            if nbytes:
                receipts.append(self._ledger.record(storage_usage(org_id, nbytes, day, timezone)))
        written = [receipt.wait() for receipt in receipts]
        return [outcome.event_id for outcome in written if outcome.new]

    def start(self) -> None:
        """Run `run_due` every `interval_s` in a daemon thread (the first run one interval in)."""
        if self._thread is not None or self._interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="billing-scheduler", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                run = self.run_due()
            except Exception:
                log.exception("billing chores failed; the next slot catches up")
                continue
            if run.sampled or run.finalized:
                log.info(
                    "billing slot %s: %d storage samples, %d invoices finalised",
                    run.slot,
                    len(run.sampled),
                    len(run.finalized),
                )


def slot_of(now: datetime, interval_s: float) -> str:
    """The start of the slot `now` falls in, as sortable text (`2026-12-01T00:05:00`)."""
    seconds = int(now.timestamp() // max(interval_s, 1) * max(interval_s, 1))
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def claim(session: Session, chore: str, slot: str, now: datetime) -> bool:
    """Advance `chore` to `slot` if it is behind; True when this transaction did (so runs it)."""
    session.execute(
        text("INSERT INTO billing_chores (name, slot) VALUES (:name, '') ON CONFLICT (name) DO NOTHING"),
        {"name": chore},
    )
    advanced = session.execute(
        update(BillingChore)
        .where(BillingChore.name == chore, BillingChore.slot < slot)
        .values(slot=slot, ran_at=now)
    )
    return bool(advanced.rowcount == 1)  # type: ignore[attr-defined]


def stored_bytes(store: ArtifactStore, org_id: str) -> int:
    """Bytes an organisation keeps in the artifact store: its dataset files and model artifacts."""
    return sum(store.size(folder) for folder in (f"datasets/{org_id}", f"models/{org_id}"))


def _existing(session: Session, event_ids: list[str]) -> set[str]:
    if not event_ids:
        return set()
    rows = session.scalars(select(UsageRecord.event_id).where(UsageRecord.event_id.in_(event_ids)))
    return set(rows)
