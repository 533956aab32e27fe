"""Which rate limits apply to a caller: the organisation's (an override, else its plan's, else the
platform default) and the key's (an override, if any). Read through a short-lived cache."""

from __future__ import annotations

import threading

from sqlalchemy import select

from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.metering.ratelimit import Limits
from openmaas.metering.tables import RateLimitOverride
from openmaas.pricing.source import PriceSource


class LimitBook:
    def __init__(
        self, db: Database, prices: PriceSource, clock: Clock, *, default: Limits, ttl: float
    ) -> None:
        self._db = db
        self._prices = prices
        self._clock = clock
        self._default = default
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str | None], tuple[float, list[tuple[str, Limits]]]] = {}

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    def subjects(self, org_id: str, api_key_id: str | None) -> list[tuple[str, Limits]]:
        """The caller's limits; may read the database (call from a thread)."""
        cached = self.cached_subjects(org_id, api_key_id)
        if cached is not None:
            return cached
        now = self._clock.monotonic()
        subjects = self._load(org_id, api_key_id)
        with self._lock:
            self._cache[(org_id, api_key_id)] = (now, subjects)
        return subjects

    def cached_subjects(self, org_id: str, api_key_id: str | None) -> list[tuple[str, Limits]] | None:
        """The caller's limits if cached and fresh, else None: never touches the database."""
        cached = self._cache.get((org_id, api_key_id))
        if cached is not None and self._clock.monotonic() - cached[0] <= self._ttl:
            return cached[1]
        return None

    def _load(self, org_id: str, api_key_id: str | None) -> list[tuple[str, Limits]]:
        ids = [org_id] if api_key_id is None else [org_id, api_key_id]
        with self._db.read_session() as session:
            overrides = {
                row.subject_id: Limits(row.requests_per_minute, row.tokens_per_minute)
                for row in session.scalars(
                    select(RateLimitOverride).where(RateLimitOverride.subject_id.in_(ids))
                )
            }
        org_limits = overrides.get(org_id)
        if org_limits is None:
            plan = self._prices.plan_limits(org_id, self._clock.now())
            org_limits = (
                self._default if plan is None else Limits(plan.requests_per_minute, plan.tokens_per_minute)
            )
        subjects = [(org_id, org_limits)]
        if api_key_id is not None and api_key_id in overrides:
            subjects.append((api_key_id, overrides[api_key_id]))
        return subjects
