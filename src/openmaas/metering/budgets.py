"""Budget reservations: a request holds its worst-case cost before it runs.

Organisations with no prepaid wallet and no cap, and keys with no cap, need no hold: which do is
cached for `ttl` seconds so the common path stays off the database.

The others are held against a lease: a slice of the budget this server reserves in the database
(`reserved_micros` grows by it, and a `budget_holds` row marked as a lease records it) and then
hands out to requests in memory, under a lock, so a request's hold costs no database round trip.
The database still decides every slice atomically: the extension reads the account under its row
lock (SQLite: the write lock) and takes only budget neither spent nor reserved, so the slices of
all servers together never exceed the wallet or cap, and neither do the requests inside them —
spending stays within the cap by at most one request's actual cost above its worst case.
A slice is at most an eighth of what is left (and 64 worst cases), so near the cap leases shrink
to single requests, and a server returns its lease once idle for `lease_idle_s` with all its
usage written, so budget does not sit idle on one server for long.

Settling a request's usage (in the ledger's transaction, see settlement.py) deducts its actual cost
from the lease row and from `reserved_micros` together, so `reserved_micros` always equals the sum
of the hold rows. A lease left by a crashed server expires like a request's hold; a live lease
renews its expiry every third of its time to live (`lease_ttl_s`), also while no request comes,
and one found expired is replaced. (Holds of single requests, which servers wrote before leases,
settle and expire as before: deleted whole.)
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from openmaas import errors
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.ids import new_id
from openmaas.metering import settlement
from openmaas.metering.events import Hold
from openmaas.metering.receipts import Receipt
from openmaas.metering.tables import BillingAccount, KeyBudget

log = logging.getLogger("openmaas.metering")

_ORG_REFUSED = (
    "Insufficient quota: the organization's prepaid credit or monthly spending cap "
    "does not cover this request."
)
_KEY_REFUSED = "Insufficient quota: this API key's monthly spending cap does not cover this request."
_LEASE_SHARE = 8  # a lease takes at most 1/8 of the budget left
_LEASE_REQUESTS = 64  # and at most 64 worst cases


@dataclass(frozen=True, slots=True)
class _Needs:
    org: bool
    key: bool
    loaded_at: float


@dataclass(eq=False)
class _Lease:
    """This server's slice of one budget: the org's (`org`), a key's (`key`), or both at once."""

    id: str
    org_id: str
    api_key_id: str | None
    org: bool
    key: bool
    remaining: int = 0  # held in the database, promised to no request and not yet spent
    in_flight: dict[str, int] = field(default_factory=dict)  # request id → its worst case
    stored: bool = False  # its row exists
    renew_at: float = 0.0  # monotonic time to renew the row's expiry
    recheck: bool = False  # the budget's settings changed: re-read it before the next request
    used_at: float = 0.0
    last_receipt: Receipt | None = None  # receipts resolve in order: when it is, all are
    dead: bool = False  # returned or lost: take a new one
    lock: threading.Lock = field(default_factory=threading.Lock)


class _LeaseGone(Exception):
    """The lease's row was released (it expired while this server was stalled)."""


class _NoBudget(Exception):
    """Neither the organisation nor the key has a wallet or cap any more."""


class BudgetGuard:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        ttl: float,
        lease_ttl_s: float = 120.0,
        lease_idle_s: float = 1.0,
        expiry_sweep_s: float = 30.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self._ttl = ttl
        self._lease_ttl_s = lease_ttl_s
        self._lease_idle_s = lease_idle_s
        self._expiry_sweep_s = expiry_sweep_s
        self._swept_at = clock.monotonic()
        self._needs: dict[tuple[str, str | None], _Needs] = {}
        self._leases: dict[tuple[str, str | None, bool, bool], _Lease] = {}  # by what they hold
        self._by_id: dict[str, _Lease] = {}
        self._unreturned: list[str] = []  # ids whose return failed; retried by `maintain`
        self._lock = threading.Lock()

    def forget(self, org_id: str) -> None:
        """Re-read an organisation's budget settings on its next request (after a change here);
        its leases re-check the budget before their next request too."""
        with self._lock:
            for subject in [s for s in self._needs if s[0] == org_id]:
                del self._needs[subject]
            for lease in self._by_id.values():
                if lease.org_id == org_id:
                    lease.recheck = True

    def reserve(
        self, org_id: str, api_key_id: str | None, amount_micros: int, period: str, hold_id: str
    ) -> Hold:
        """Hold `amount_micros` on the org (and key) or raise `InsufficientQuota` (402).

        `hold_id` (the request id) names the hold; a second hold under an id still in flight here
        is a `Conflict`. The hold is taken from this server's lease, extended first if needed."""
        needs = self._needs_hold(org_id, api_key_id)
        if not (needs.org or needs.key) or amount_micros <= 0:
            return Hold(org_id, api_key_id, 0, 0)
        subject = (org_id, api_key_id if needs.key else None, needs.org, needs.key)
        while True:
            lease = self._lease(subject)
            with lease.lock:
                if lease.dead:
                    continue
                if hold_id in lease.in_flight:  # before extending for it
                    return self._take(lease, hold_id, amount_micros)
                if self._short(lease, amount_micros):
                    try:
                        self._extend(lease, amount_micros, period)
                    except _LeaseGone:
                        self._drop(lease)
                        continue
                    except _NoBudget:
                        self._drop(lease)
                        self.forget(org_id)
                        return Hold(org_id, api_key_id, 0, 0)
                return self._take(lease, hold_id, amount_micros)

    def reserve_nowait(
        self, org_id: str, api_key_id: str | None, amount_micros: int, hold_id: str
    ) -> Hold | None:
        """`reserve` from memory for the event loop: None, with nothing done, when it would wait
        or need the database (settings not cached, no lease here, the lease too small or due for
        renewal, or another thread busy with it). Raises `Conflict` like `reserve`."""
        needs = self._needs.get((org_id, api_key_id))
        if needs is None or self._clock.monotonic() - needs.loaded_at > self._ttl:
            return None
        if not (needs.org or needs.key) or amount_micros <= 0:
            return Hold(org_id, api_key_id, 0, 0)
        lease = self._leases.get((org_id, api_key_id if needs.key else None, needs.org, needs.key))
        if lease is None or not lease.lock.acquire(blocking=False):
            return None
        try:
            if lease.dead or self._short(lease, amount_micros):
                return None
            return self._take(lease, hold_id, amount_micros)
        finally:
            lease.lock.release()

    def _short(self, lease: _Lease, amount: int) -> bool:
        """Whether the lease must go to the database before holding `amount`: too little left, its
        budget changed, or its expiry due for renewal."""
        return lease.recheck or lease.remaining < amount or self._clock.monotonic() >= lease.renew_at

    def _take(self, lease: _Lease, hold_id: str, amount: int) -> Hold:
        """Hold `amount` of the lease for request `hold_id` (its lock held, its room checked)."""
        if hold_id in lease.in_flight:
            raise errors.Conflict(f"Request {hold_id!r} is already in progress.", code="request_in_progress")
        lease.remaining -= amount
        lease.in_flight[hold_id] = amount
        lease.used_at = self._clock.monotonic()
        org_part, key_part = (amount if lease.org else 0), (amount if lease.key else 0)
        return Hold(lease.org_id, lease.api_key_id, org_part, key_part, lease.id, lease=True)

    def settle(self, hold: Hold, request_id: str, receipt: Receipt) -> None:
        """The request's usage is queued (`receipt`): its lease keeps the actual cost, which the
        ledger deducts from the lease row when it writes, and frees the rest of the worst case."""
        self._give_back(hold, request_id, receipt.cost_micros, receipt)

    def needs_hold(self, org_id: str, api_key_id: str | None) -> bool:
        """Whether the organisation or key has a wallet or cap to reserve against (cached)."""
        needs = self._needs_hold(org_id, api_key_id)
        return needs.org or needs.key

    def cached_needs_hold(self, org_id: str, api_key_id: str | None) -> bool | None:
        """`needs_hold` if cached and fresh, else None: never touches the database."""
        cached = self._needs.get((org_id, api_key_id))
        if cached is None or self._clock.monotonic() - cached.loaded_at > self._ttl:
            return None
        return cached.org or cached.key

    def release(self, hold: Hold, request_id: str | None = None) -> None:
        """Give back a hold whose request was never served (so no usage is written for it)."""
        if hold.lease:
            if request_id is not None:
                self._give_back(hold, request_id, 0, None)
            return
        if hold.hold_id is None:
            return
        with settlement.transaction(self._db) as sql:
            settlement.release_amounts(sql, *settlement.take_holds(sql, [hold.hold_id]))

    def maintain(self) -> int:
        """The ledger writer's periodic chore: return idle leases, renew the others' expiry (a
        request may be in flight on a lease that takes no new ones); every `expiry_sweep_s`,
        release expired holds and leases (left by crashed servers). Returns how many expired were
        released."""
        self.return_leases(self._lease_idle_s)
        self._renew_due()
        if self._clock.monotonic() - self._swept_at < self._expiry_sweep_s:
            return 0
        self._swept_at = self._clock.monotonic()
        return self.release_expired()

    def return_leases(self, idle_s: float = 0.0) -> int:
        """Return to the budget every lease with no request in flight, all its usage written, and
        no request for `idle_s` seconds; how many were returned."""
        now = self._clock.monotonic()
        with self._lock:
            leases = list(self._leases.values())
        ready, self._unreturned = self._unreturned, []
        for lease in leases:
            with lease.lock:
                receipt = lease.last_receipt
                if lease.dead or lease.in_flight or now - lease.used_at < idle_s:
                    continue
                if receipt is not None and receipt.outcome is None:
                    continue
                self._drop(lease)
                if lease.stored:
                    ready.append(lease.id)
        if not ready:
            return 0
        try:
            with settlement.transaction(self._db) as sql:
                settlement.release_amounts(sql, *settlement.take_holds(sql, ready))
        except Exception:
            self._unreturned = ready + self._unreturned
            raise
        return len(ready)

    def close(self) -> None:
        """Return every lease with nothing in flight (call after the ledger wrote its queue), so a
        restart leaves no budget reserved until the leases would expire."""
        try:
            self.return_leases()
        except Exception:
            log.exception("returning budget leases failed; they are released when they expire")

    def _renew_due(self) -> None:
        now = self._clock.monotonic()
        with self._lock:
            due = [lease for lease in self._leases.values() if lease.stored and now >= lease.renew_at]
        expires = _naive(self._clock.now() + timedelta(seconds=self._lease_ttl_s), self._db)
        for lease in due:
            with lease.lock:
                if lease.dead:
                    continue
                with settlement.transaction(self._db) as sql:
                    renewed = sql.run(
                        "UPDATE budget_holds SET expires_at = ? WHERE id = ?", (expires, lease.id)
                    )
                if renewed.rowcount != 1:
                    self._drop(lease)  # expired and released meanwhile: the next request takes a new one
                    continue
                lease.renew_at = now + self._lease_ttl_s / 3

    def release_expired(self) -> int:
        """Release holds and leases past their expiry (their server crashed); how many."""
        now = _naive(self._clock.now(), self._db)
        with self._db.read_session() as session:
            found = settlement.Sql.of(session, self._db).run(
                "SELECT id FROM budget_holds WHERE expires_at < ?", (now,)
            )
            ids = [row[0] for row in found.fetchall()]
        if not ids:
            return 0
        with self._db.session() as session:
            sql = settlement.Sql.of(session, self._db)
            settlement.release_amounts(sql, *settlement.take_holds(sql, ids))
        return len(ids)

    def _give_back(self, hold: Hold, request_id: str, cost: int, receipt: Receipt | None) -> None:
        lease = self._by_id.get(hold.hold_id) if hold.lease and hold.hold_id else None
        if lease is None:
            return
        with lease.lock:
            worst = lease.in_flight.pop(request_id, None)
            if worst is None:
                return
            lease.remaining += worst - cost
            if receipt is not None:
                lease.last_receipt = receipt

    def _lease(self, subject: tuple[str, str | None, bool, bool]) -> _Lease:
        lease = self._leases.get(subject)
        if lease is not None:
            return lease
        with self._lock:
            lease = self._leases.get(subject)
            if lease is None:
                org_id, key_id, org, key = subject
                lease = _Lease(new_id("lease_"), org_id, key_id, org, key)
                self._leases[subject] = self._by_id[lease.id] = lease
            return lease

    def _drop(self, lease: _Lease) -> None:
        """Forget a lease (its lock held): returned, or its row gone."""
        lease.dead = True
        with self._lock:
            subject = (lease.org_id, lease.api_key_id, lease.org, lease.key)
            if self._leases.get(subject) is lease:
                del self._leases[subject]
            self._by_id.pop(lease.id, None)

    def _extend(self, lease: _Lease, amount: int, period: str) -> None:
        """Grow (or, after the budget shrank, trim) the lease so `amount` fits, and renew its expiry;
        raise `InsufficientQuota` when the budget left cannot cover it. Its lock is held."""
        expires_at = self._clock.now() + timedelta(seconds=self._lease_ttl_s)
        with settlement.transaction(self._db) as sql:
            # Lease row first, then account and key: the order the ledger's settlement locks them
            # in, so the two never wait on each other in a circle.
            if lease.stored and not sql.is_sqlite and not _lock_row(sql, lease.id):
                raise _LeaseGone
            headroom, refusal = _headroom(sql, lease, period)
            if headroom < 0:  # the cap was lowered under the lease: give back what it can
                trim = min(max(lease.remaining, 0), -headroom)
                headroom += trim
                grant = -trim
            else:
                grant = 0
            need = amount - (lease.remaining + grant)
            refused = need > headroom
            if not refused:
                target = min(headroom // _LEASE_SHARE, _LEASE_REQUESTS * amount)
                grant += max(need, target - (lease.remaining + grant), 0)
            if grant or not refused:  # a refusal still commits the trim (raising here would undo it)
                self._grant(sql, lease, grant, expires_at)
        lease.remaining += grant
        if refused:
            raise errors.InsufficientQuota(refusal)
        lease.stored, lease.recheck = True, False
        lease.renew_at = self._clock.monotonic() + self._lease_ttl_s / 3

    def _grant(self, sql: settlement.Sql, lease: _Lease, grant: int, expires_at: datetime) -> None:
        org_part, key_part = (grant if lease.org else 0), (grant if lease.key else 0)
        expires = _naive(expires_at, self._db)
        if lease.stored:
            renewed = sql.run(
                "UPDATE budget_holds SET org_micros = org_micros + ?, key_micros = key_micros + ?, "
                "expires_at = ? WHERE id = ?",
                (org_part, key_part, expires, lease.id),
            )
            if renewed.rowcount != 1:
                raise _LeaseGone
        else:
            sql.run(
                "INSERT INTO budget_holds (id, org_id, api_key_id, org_micros, key_micros, expires_at, "
                "org_lease, key_lease) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (lease.id, lease.org_id, lease.api_key_id, org_part, key_part, expires, lease.org, lease.key),
            )
        if org_part:
            sql.run(
                "UPDATE billing_accounts SET reserved_micros = reserved_micros + ? WHERE org_id = ?",
                (org_part, lease.org_id),
            )
        if key_part:
            sql.run(
                "UPDATE key_budgets SET reserved_micros = reserved_micros + ? WHERE key_id = ?",
                (key_part, lease.api_key_id),
            )

    def _needs_hold(self, org_id: str, api_key_id: str | None) -> _Needs:
        now = self._clock.monotonic()
        cached = self._needs.get((org_id, api_key_id))
        if cached is not None and now - cached.loaded_at <= self._ttl:
            return cached
        with self._db.read_session() as session:
            account = session.get(BillingAccount, org_id)
            key = session.get(KeyBudget, api_key_id) if api_key_id is not None else None
        needs = _Needs(
            org=account is not None and (account.prepaid or account.monthly_cap_micros is not None),
            key=key is not None and key.monthly_cap_micros is not None,
            loaded_at=now,
        )
        with self._lock:
            self._needs[(org_id, api_key_id)] = needs
        return needs


def _lock_row(sql: settlement.Sql, hold_id: str) -> bool:
    return sql.run("SELECT 1 FROM budget_holds WHERE id = ? FOR UPDATE", (hold_id,)).fetchone() is not None


def _headroom(sql: settlement.Sql, lease: _Lease, period: str) -> tuple[int, str]:
    """Budget neither spent nor reserved, over the lease's wallet and caps (their rows locked until
    the transaction ends), and the refusal to give when it is too little."""
    lock = "" if sql.is_sqlite else " FOR UPDATE"
    room: list[tuple[int, str]] = []
    if lease.org:
        row = sql.run(
            "SELECT prepaid, balance_micros - unbilled_micros - reserved_micros, monthly_cap_micros, "
            "monthly_cap_micros - (CASE WHEN period = ? THEN period_spend_micros ELSE 0 END) "
            "- reserved_micros FROM billing_accounts WHERE org_id = ?" + lock,
            (period, lease.org_id),
        ).fetchone()
        if row is not None:
            prepaid, wallet, cap, cap_left = row
            room += [(wallet, _ORG_REFUSED)] if prepaid else []
            room += [(cap_left, _ORG_REFUSED)] if cap is not None else []
    if lease.key:
        row = sql.run(
            "SELECT monthly_cap_micros, monthly_cap_micros - (CASE WHEN period = ? THEN period_spend_micros "
            "ELSE 0 END) - reserved_micros FROM key_budgets WHERE key_id = ?" + lock,
            (period, lease.api_key_id),
        ).fetchone()
        if row is not None and row[0] is not None:
            room.append((row[1], _KEY_REFUSED))
    if not room:
        raise _NoBudget
    return min(room, key=lambda item: item[0])


def _naive(when: datetime, db: Database) -> object:
    """A time as `UTCDateTime` stores it (SQLite: SQLAlchemy's text format), for plain SQL."""
    naive = when.astimezone(UTC).replace(tzinfo=None)
    return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if db.is_sqlite else naive
