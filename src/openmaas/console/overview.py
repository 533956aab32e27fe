"""The tenant's overview: this month's spend against its cap or wallet, requests, tokens and its
top models, read from the hourly usage sums (never the events), and its error rate: failed served
requests (`metering.failures`) ÷ all served requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from fastapi import APIRouter, Request
from starlette.responses import Response

from openmaas.billing import credits
from openmaas.billing import usage_report as report
from openmaas.console.web import PREFIX, ConsoleRoute, can, platform_of, redirect, render, signed_in
from openmaas.metering.failures import failures_between
from openmaas.pricing.periods import period_bounds, period_of
from openmaas.schemas import billing as schemas
from openmaas.tenancy import scopes as scope_rules
from openmaas.tenancy import service as tenancy

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

_TOP_MODELS = 5


@dataclass
class ModelUse:
    name: str
    requests: int = 0
    tokens: int = 0
    cost: Decimal = Decimal(0)


@dataclass
class MonthUsage:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    unpriced: bool = False
    failures: int = 0  # failed served requests (`metering.failures`), not billed
    top_models: list[ModelUse] = field(default_factory=list)

    @property
    def error_rate(self) -> str | None:
        """Failed ÷ (metered + failed) requests, as a percentage; None before any request."""
        total = self.requests + self.failures
        return None if not total else f"{self.failures * 100 / total:.2f}%"


@router.get("", name="console.home")
def home() -> Response:
    return redirect(f"{PREFIX}/")


@router.get("/", name="console.overview")
def overview(request: Request) -> Response:
    signed = signed_in(request)
    principal = signed.principal
    if scope_rules.OPERATOR in principal.scopes:
        return redirect(f"{PREFIX}/organizations")
    platform = platform_of(request)
    wallet = month = None
    with platform.db.read_session() as session:
        if principal.org_id is not None:
            org = tenancy.get_organization(session, principal.org_id)
            now = platform.clock.now()
            currency = platform.settings.currency
            if can(signed, "billing:read"):
                wallet = credits.credits(session, org.id, currency, now)
            if can(signed, "usage:read"):
                period = (wallet.period if wallet else None) or period_of(now, org.timezone)
                start, end = period_bounds(period, org.timezone)
                filters = report.UsageFilter(start=start, end=end)
                month = _month(report.usage(session, org.id, filters, group_by=["model"], currency=currency))
                month.failures = failures_between(session, org.id, start, end)
    return render(request, "overview.html", signed, wallet=wallet, month=month, spend=_spend(wallet))


def _month(usage: schemas.UsageReport) -> MonthUsage:
    month = MonthUsage(unpriced=usage.unpriced)
    models: dict[str, ModelUse] = {}
    for bucket in usage.data:
        assert isinstance(bucket, schemas.UsageBucket)
        cost = Decimal(bucket.cost)
        month.cost += cost
        name = bucket.model_name or bucket.model
        use = models.setdefault(name, ModelUse(name)) if name else None
        if use is not None:
            use.cost += cost
        if bucket.unit == "requests":
            month.requests += bucket.quantity
            if use is not None:
                use.requests += bucket.quantity
        elif bucket.unit in ("input_tokens", "output_tokens"):
            setattr(month, bucket.unit, getattr(month, bucket.unit) + bucket.quantity)
            if use is not None:
                use.tokens += bucket.quantity
    ranked = sorted(models.values(), key=lambda m: (m.cost, m.requests, m.tokens), reverse=True)
    month.top_models = ranked[:_TOP_MODELS]
    return month


@dataclass(frozen=True)
class Spend:
    """The month's spend against what bounds it: the cap, else a prepaid wallet's balance."""

    spent: Decimal
    limit: Decimal | None
    label: str

    @property
    def percent(self) -> int:
        if not self.limit:
            return 0
        return min(100, int(self.spent * 100 / self.limit))


def _spend(wallet: schemas.Credits | None) -> Spend | None:
    if wallet is None:
        return None
    spent = Decimal(wallet.period_spend)
    if wallet.monthly_cap is not None:
        return Spend(spent, Decimal(wallet.monthly_cap), "of the monthly cap")
    if wallet.prepaid:
        return Spend(spent, spent + Decimal(wallet.available), "of the prepaid wallet")
    return Spend(spent, None, "no monthly cap set")
