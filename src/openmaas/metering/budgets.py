"""Budget reservations: a request holds its worst-case cost before it runs.

The hold is one conditional `UPDATE … SET reserved = reserved + :cost WHERE <still affordable>`
(plain SQL, identical on SQLite and PostgreSQL):
the database evaluates the condition on the row it locks (SQLite's write lock, PostgreSQL's row
lock with its re-check), so concurrent requests can never reserve past the wallet or the cap.
The ledger writer releases the hold in the transaction that writes the usage (see settlement.py),
and `release` gives it back for work that was never served.

Organisations with no prepaid wallet and no cap, and keys with no cap, need no hold: which do is
cached for `ttl` seconds so the common path stays off the database.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from openmaas import errors
from openmaas.billing.models import BillingAccount, KeyBudget
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.metering import settlement
from openmaas.metering.events import Hold


@dataclass(frozen=True, slots=True)
class _Needs:
    org: bool
    key: bool
    loaded_at: float


class BudgetGuard:
    def __init__(self, db: Database, clock: Clock, *, ttl: float, hold_ttl_s: float = 3600.0) -> None:
        self._db = db
        self._clock = clock
        self._ttl = ttl
        self._hold_ttl_s = hold_ttl_s
        self._needs: dict[tuple[str, str | None], _Needs] = {}
        self._lock = threading.Lock()

    def forget(self, org_id: str) -> None:
        """Re-read an organisation's budget settings on its next request (after a change here)."""
        with self._lock:
            for subject in [s for s in self._needs if s[0] == org_id]:
                del self._needs[subject]

    def reserve(
        self, org_id: str, api_key_id: str | None, amount_micros: int, period: str, hold_id: str
    ) -> Hold:
        """Hold `amount_micros` on the org (and key) or raise `InsufficientQuota` (402).

        `hold_id` (the request id) names the hold; a second hold under an id still in flight is a
        `Conflict`."""
        needs = self._needs_hold(org_id, api_key_id)
        if not (needs.org or needs.key) or amount_micros <= 0:
            return Hold(org_id, api_key_id, 0, 0)
        hold = Hold(
            org_id, api_key_id, amount_micros if needs.org else 0, amount_micros if needs.key else 0, hold_id
        )
        with settlement.transaction(self._db) as sql:
            if needs.org and not _hold_org(sql, org_id, amount_micros, period):
                raise errors.InsufficientQuota(
                    "Insufficient quota: the organization's prepaid credit or monthly spending cap "
                    "does not cover this request."
                )
            if needs.key and api_key_id is not None and not _hold_key(sql, api_key_id, amount_micros, period):
                raise errors.InsufficientQuota(
                    "Insufficient quota: this API key's monthly spending cap does not cover this request."
                )
            expires_at = self._clock.now() + timedelta(seconds=self._hold_ttl_s)
            inserted = sql.run(
                "INSERT INTO budget_holds (id, org_id, api_key_id, org_micros, key_micros, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (hold_id, org_id, api_key_id, hold.org_micros, hold.key_micros, _naive(expires_at, self._db)),
            )
            if inserted.rowcount != 1:
                raise errors.Conflict(
                    f"Request {hold_id!r} is already in progress.", code="request_in_progress"
                )
        return hold

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

    def release(self, hold: Hold) -> None:
        """Give back a hold whose request was never served (so no usage is written for it)."""
        if hold.hold_id is None:
            return
        with settlement.transaction(self._db) as sql:
            settlement.release_amounts(sql, *settlement.take_holds(sql, [hold.hold_id]))

    def release_expired(self) -> int:
        """Release holds whose request outlived `hold_ttl_s` (its server crashed); how many."""
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


_HOLD_ORG = """
UPDATE billing_accounts SET reserved_micros = reserved_micros + ?
WHERE org_id = ?
  AND (NOT prepaid OR balance_micros - unbilled_micros - reserved_micros >= ?)
  AND (monthly_cap_micros IS NULL
       OR (CASE WHEN period = ? THEN period_spend_micros ELSE 0 END) + reserved_micros + ?
          <= monthly_cap_micros)
"""
_HOLD_KEY = """
UPDATE key_budgets SET reserved_micros = reserved_micros + ?
WHERE key_id = ?
  AND (monthly_cap_micros IS NULL
       OR (CASE WHEN period = ? THEN period_spend_micros ELSE 0 END) + reserved_micros + ?
          <= monthly_cap_micros)
"""


def _hold_org(sql: settlement.Sql, org_id: str, amount: int, period: str) -> bool:
    if sql.run(_HOLD_ORG, (amount, org_id, amount, period, amount)).rowcount == 1:
        return True
    # No account row: nothing to enforce (it was deleted since the cache was filled).
    return sql.run("SELECT 1 FROM billing_accounts WHERE org_id = ?", (org_id,)).fetchone() is None


def _hold_key(sql: settlement.Sql, key_id: str, amount: int, period: str) -> bool:
    if sql.run(_HOLD_KEY, (amount, key_id, period, amount)).rowcount == 1:
        return True
    return sql.run("SELECT 1 FROM key_budgets WHERE key_id = ?", (key_id,)).fetchone() is None


def _naive(when: datetime, db: Database) -> object:
    """A time as `UTCDateTime` stores it (SQLite: SQLAlchemy's text format), for plain SQL."""
    naive = when.astimezone(UTC).replace(tzinfo=None)
    return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if db.is_sqlite else naive
