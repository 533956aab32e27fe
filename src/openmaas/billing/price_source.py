"""`DatabasePriceSource`: the `PriceSource` (openmaas/pricing/source.py) that metering prices
events, finds billing months and plan rate limits through, read from billing's pricebooks and
marketplace listings and the organisations' plans and time zones.

It caches organisations' plans and time zones, pricebook versions and marketplace listings for
`ttl` seconds (so an API server sees another server's new prices within `ttl`), and is refreshed
at once on this server when prices change here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from openmaas.billing.tables import Listing, Pricebook
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.pricing.sheets import PriceSheet, parse_components
from openmaas.pricing.source import OrgProfile, PlanLimits
from openmaas.tenancy.tables import Organization


@dataclass(frozen=True, slots=True)
class _Versions:
    effective_from: datetime
    sheet: PriceSheet
    limits: PlanLimits | None  # None: the version sets neither rate limit


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

    def plan_limits(self, org_id: str, at: datetime) -> PlanLimits | None:
        self._refresh()
        version = self._plan_version(org_id, at)
        return version.limits if version is not None else None

    def sheet_for(self, org_id: str, model: str | None, at: datetime) -> PriceSheet | None:
        self._refresh()
        if model is not None:
            for listed in self._listings.get(model, ()):
                live = listed.created_at <= at and (listed.withdrawn_at is None or at < listed.withdrawn_at)
                if live and listed.sheet.seller_org_id != org_id:
                    return listed.sheet
        version = self._plan_version(org_id, at)
        return version.sheet if version is not None else None

    def _plan_version(self, org_id: str, at: datetime) -> _Versions | None:
        """The version of the organisation's plan in effect at `at` (the caller refreshed)."""
        chosen = None
        for version in self._plans.get(self.profile(org_id).plan, ()):
            if version.effective_from <= at:
                chosen = version
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
                    version = _Versions(book.effective_from, sheet, _limits(book))
                    plans.setdefault(book.plan, []).append(version)
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


def _limits(book: Pricebook) -> PlanLimits | None:
    if book.requests_per_minute is None and book.tokens_per_minute is None:
        return None
    return PlanLimits(book.requests_per_minute, book.tokens_per_minute)
