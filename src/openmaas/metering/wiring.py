"""Builds the metering services for a `Platform` (called from `bootstrap`, which passes in the
price source: billing's, which metering must not import)."""

from __future__ import annotations

from dataclasses import dataclass

from openmaas.clock import Clock
from openmaas.config import Settings
from openmaas.db.database import Database
from openmaas.metering.budgets import BudgetGuard
from openmaas.metering.failures import FailureCounter
from openmaas.metering.gate import UsageGate
from openmaas.metering.ledger import UsageLedger
from openmaas.metering.limits import LimitBook
from openmaas.metering.ratelimit import InMemoryRateLimiter, Limits, RateLimiter
from openmaas.metering.ratelimit_db import DatabaseRateLimiter
from openmaas.pricing.source import PriceSource


@dataclass(frozen=True)
class Metering:
    prices: PriceSource
    meter: UsageLedger
    budgets: BudgetGuard
    limits: LimitBook
    gate: UsageGate


def build_metering(settings: Settings, db: Database, clock: Clock, prices: PriceSource) -> Metering:
    budgets = BudgetGuard(
        db, clock, ttl=settings.billing_cache_ttl_s, lease_idle_s=settings.billing_lease_idle_s
    )
    meter = UsageLedger(
        db,
        prices,
        clock,
        max_queue=settings.metering_queue_size,
        max_batch=settings.metering_max_batch,
        linger_s=settings.metering_linger_s,
        sweep=budgets.maintain,
        sweep_interval_s=settings.billing_lease_idle_s,
        wait_timeout_s=settings.metering_wait_timeout_s,
    )
    default = Limits(settings.rate_limit_requests_per_minute, settings.rate_limit_tokens_per_minute)
    limits = LimitBook(db, prices, clock, default=default, ttl=settings.billing_cache_ttl_s)
    limiter: RateLimiter = (
        DatabaseRateLimiter(db, clock) if settings.rate_limiter == "database" else InMemoryRateLimiter(clock)
    )
    failures = FailureCounter(db, clock, lambda org_id: prices.profile(org_id).timezone)
    gate = UsageGate(meter, budgets, limiter, limits, prices, clock, failures)
    return Metering(prices, meter, budgets, limits, gate)
