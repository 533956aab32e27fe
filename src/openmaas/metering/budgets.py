"""Budget reservations: a request holds its worst-case cost before it runs.

The hold is one conditional `UPDATE … SET reserved = reserved + :cost WHERE <still affordable>`:
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

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.billing.models import BillingAccount, KeyBudget
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.metering.events import Hold


@dataclass(frozen=True, slots=True)
class _Needs:
    org: bool
    key: bool
    loaded_at: float


class BudgetGuard:
    def __init__(self, db: Database, clock: Clock, *, ttl: float) -> None:
        self._db = db
        self._clock = clock
        self._ttl = ttl
        self._needs: dict[tuple[str, str | None], _Needs] = {}
        self._lock = threading.Lock()

    def forget(self, org_id: str) -> None:
        """Re-read an organisation's budget settings on its next request (after a change here)."""
        with self._lock:
            for subject in [s for s in self._needs if s[0] == org_id]:
                del self._needs[subject]

    def reserve(self, org_id: str, api_key_id: str | None, amount_micros: int, period: str) -> Hold:
        """Hold `amount_micros` on the org (and key) or raise `InsufficientQuota` (402)."""
        needs = self._needs_hold(org_id, api_key_id)
        if not (needs.org or needs.key) or amount_micros <= 0:
            return Hold(org_id, api_key_id, 0, 0)
        with self._db.session() as session:
            if needs.org and not _hold_org(session, org_id, amount_micros, period):
                raise errors.InsufficientQuota(
                    "Insufficient quota: the organization's prepaid credit or monthly spending cap "
                    "does not cover this request."
                )
            if (
                needs.key
                and api_key_id is not None
                and not _hold_key(session, api_key_id, amount_micros, period)
            ):
                raise errors.InsufficientQuota(
                    "Insufficient quota: this API key's monthly spending cap does not cover this request."
                )
        return Hold(org_id, api_key_id, amount_micros if needs.org else 0, amount_micros if needs.key else 0)

    def release(self, hold: Hold) -> None:
        """Give back a hold whose request was never served (so no usage is written for it)."""
        if not (hold.org_micros or hold.key_micros):
            return
        with self._db.session() as session:
            if hold.org_micros:
                session.execute(
                    update(BillingAccount)
                    .where(BillingAccount.org_id == hold.org_id)
                    .values(reserved_micros=BillingAccount.reserved_micros - hold.org_micros)
                )
            if hold.key_micros and hold.api_key_id is not None:
                session.execute(
                    update(KeyBudget)
                    .where(KeyBudget.key_id == hold.api_key_id)
                    .values(reserved_micros=KeyBudget.reserved_micros - hold.key_micros)
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


def _hold_org(session: Session, org_id: str, amount: int, period: str) -> bool:
    account = BillingAccount
    spent = case((account.period == period, account.period_spend_micros), else_=0)
    result = session.execute(
        update(account)
        .where(
            account.org_id == org_id,
            or_(
                account.prepaid.is_(False),
                account.balance_micros - account.unbilled_micros - account.reserved_micros >= amount,
            ),
            or_(
                account.monthly_cap_micros.is_(None),
                spent + account.reserved_micros + amount <= account.monthly_cap_micros,
            ),
        )
        .values(reserved_micros=account.reserved_micros + amount)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return True
    # No account row: nothing to enforce (it was deleted since the cache was filled).
    return session.scalar(select(account.org_id).where(account.org_id == org_id)) is None


def _hold_key(session: Session, key_id: str, amount: int, period: str) -> bool:
    budget = KeyBudget
    spent = case((budget.period == period, budget.period_spend_micros), else_=0)
    result = session.execute(
        update(budget)
        .where(
            budget.key_id == key_id,
            or_(
                budget.monthly_cap_micros.is_(None),
                spent + budget.reserved_micros + amount <= budget.monthly_cap_micros,
            ),
        )
        .values(reserved_micros=budget.reserved_micros + amount)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return True
    return session.scalar(select(budget.key_id).where(budget.key_id == key_id)) is None
