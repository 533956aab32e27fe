"""Where the ledger finds the price of an event: a `PriceSource`.

The database-backed source caches organisations' plans and time zones, pricebook versions and
marketplace listings for `ttl` seconds (so an API server sees another server's new prices within
`ttl`), and is refreshed at once on this server when prices change here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import select

from openmaas.billing.pricing import PriceSheet, parse_components
from openmaas.billing.tables import Listing, Pricebook
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.tenancy.tables import Organization


@dataclass(frozen=True, slots=True)
class OrgProfile:
    plan: str
    timezone: str


class PriceSource(Protocol):
    def profile(self, org_id: str) -> OrgProfile: ...

    def sheet_for(self, org_id: str, model: str | None, at: datetime) -> PriceSheet | None:
        """The sheet pricing `org_id`'s use of `model` at `at`; None when nothing is priced."""
        ...

    def plan_version(self, plan: str, at: datetime) -> Pricebook | None: ...

    def invalidate(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Versions:
    effective_from: datetime
    book: Pricebook
    sheet: PriceSheet


@dataclass(frozen=True, slots=True)
class _Listed:
    created_at: datetime
    withdrawn_at: datetime | None
    sheet: PriceSheet


class DatabasePriceSource:
    def __init__(self, db: Database, clock: Clock, *, ttl: float) -> None:
        self._db = db
        self._clock = clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._plans: dict[str, list[_Versions]] = {}
        self._listings: dict[str, list[_Listed]] = {}
        self._profiles: dict[str, tuple[float, OrgProfile]] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = None
            self._profiles.clear()

    def profile(self, org_id: str) -> OrgProfile:
        now = self._clock.monotonic()
        cached = self._profiles.get(org_id)
        if cached is not None and now - cached[0] <= self._ttl:
            return cached[1]
        with self._db.read_session() as session:
            org = session.get(Organization, org_id)
            profile = OrgProfile(org.plan, org.timezone) if org is not None else OrgProfile("default", "UTC")
        self._profiles[org_id] = (now, profile)
        return profile

    def plan_version(self, plan: str, at: datetime) -> Pricebook | None:
        self._refresh()
        chosen = None
        for version in self._plans.get(plan, ()):
            if version.effective_from <= at:
                chosen = version.book
        return chosen

    def sheet_for(self, org_id: str, model: str | None, at: datetime) -> PriceSheet | None:
        self._refresh()
        if model is not None:
            for listed in self._listings.get(model, ()):
                live = listed.created_at <= at and (listed.withdrawn_at is None or at < listed.withdrawn_at)
                if live and listed.sheet.seller_org_id != org_id:
                    return listed.sheet
        plan = self.profile(org_id).plan
        chosen = None
        for version in self._plans.get(plan, ()):
            if version.effective_from <= at:
                chosen = version.sheet
        return chosen

    def _refresh(self) -> None:
        now = self._clock.monotonic()
        if self._loaded_at is not None and now - self._loaded_at <= self._ttl:
            return
        with self._lock:
            if self._loaded_at is not None and now - self._loaded_at <= self._ttl:
                return
            plans: dict[str, list[_Versions]] = {}
            listings: dict[str, list[_Listed]] = {}
            with self._db.read_session() as session:
                for book in session.scalars(select(Pricebook).order_by(Pricebook.effective_from)):
                    sheet = PriceSheet(book.id, book.currency, parse_components(book.components))
                    plans.setdefault(book.plan, []).append(_Versions(book.effective_from, book, sheet))
                for item in session.scalars(select(Listing).order_by(Listing.created_at)):
                    sheet = PriceSheet(
                        item.id,
                        item.currency,
                        parse_components(item.components),
                        seller_org_id=item.owner_org_id,
                        platform_share_bps=item.platform_share_bps,
                    )
                    listings.setdefault(item.model, []).append(
                        _Listed(item.created_at, item.withdrawn_at, sheet)
                    )
            self._plans, self._listings, self._loaded_at = plans, listings, now
