"""The operator's view of the whole platform: a month's usage and revenue (at list prices) per
organisation, from the hourly sums; the `operator` scope, as every `/v1/admin` route."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from openmaas import errors
from openmaas.billing.platform_report import platform_usage
from openmaas.console.web import PREFIX, ConsoleRoute, platform_of, render, signed_in
from openmaas.pricing.money import format_micros
from openmaas.pricing.periods import next_period, parse_period, period_bounds, period_of
from openmaas.tenancy import scopes as scope_rules

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


@router.get("/platform", name="console.platform")
def platform_page(request: Request, month: Annotated[str | None, Query(max_length=20)] = None) -> Response:
    signed = signed_in(request)
    signed.principal.require(scope_rules.OPERATOR)
    platform = platform_of(request)
    current = period_of(platform.clock.now(), "UTC")
    month = (month or "").strip() or current
    try:
        parse_period(month)
    except ValueError as exc:
        raise errors.ValidationFailed(str(exc), param="month") from None
    start, end = period_bounds(month, "UTC")
    with platform.db.read_session() as session:
        orgs = platform_usage(session, start, end)
    year, number = parse_period(month)
    previous = f"{year - (number == 1)}-{(number - 2) % 12 + 1:02d}"
    return render(
        request,
        "platform.html",
        signed,
        month=month,
        previous=previous,
        following=next_period(month) if month < current else None,
        orgs=orgs,
        revenue=format_micros(sum(o.cost_micros for o in orgs)),
        requests=sum(o.requests for o in orgs),
        tokens=sum(o.tokens for o in orgs),
        money=format_micros,
        currency=platform.settings.currency,
    )
