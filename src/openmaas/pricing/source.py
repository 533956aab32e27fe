"""`PriceSource`: what metering asks about prices, without knowing where they are kept.

Billing implements it over its pricebooks, marketplace listings and the organisations' plans
(`billing/price_source.py`); the composition root passes that implementation into metering.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from openmaas.pricing.sheets import PriceSheet


@dataclass(frozen=True, slots=True)
class OrgProfile:
    plan: str
    timezone: str


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """The rate limits a plan's pricebook version sets (None: that limit is not set)."""

    requests_per_minute: int | None
    tokens_per_minute: int | None


class PriceSource(Protocol):
    def profile(self, org_id: str) -> OrgProfile:
        """The organisation's plan and time zone (its billing months are months in that zone)."""
        ...

    def sheet_for(self, org_id: str, model: str | None, at: datetime) -> PriceSheet | None:
        """The sheet pricing `org_id`'s use of `model` at `at`; None when nothing is priced."""
        ...

    def plan_limits(self, org_id: str, at: datetime) -> PlanLimits | None:
        """The rate limits of the organisation's plan at `at`; None when the plan's version in
        effect sets neither limit (or the plan has no version)."""
        ...

    def invalidate(self) -> None:
        """Forget what is cached: prices or plans changed on this server."""
        ...
