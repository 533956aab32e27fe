"""The operator's page of one organisation: its wallet (credits granted, the ledger a page at a
time), its billing settings (prepaid wallet, monthly cap, time zone of its months) and its
invoices — the same service calls and `operator` scope as `/v1/admin/organizations/{id}/…`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openmaas import errors
from openmaas.billing import credits
from openmaas.console.sessions import SignedIn
from openmaas.console.web import (
    PREFIX,
    ConsoleRoute,
    platform_of,
    redirect,
    render,
    signed_form,
    signed_in,
    validated,
)
from openmaas.pricing.periods import period_of
from openmaas.schemas import billing as schemas
from openmaas.tenancy import scopes as scope_rules
from openmaas.tenancy import service as tenancy

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
After = Annotated[str | None, Query(max_length=100)]
Done = Annotated[str | None, Query(max_length=40)]


@router.get("/organizations/{org_id}", name="console.organization")
def organization_page(request: Request, org_id: str, after: After = None, done: Done = None) -> Response:
    signed = signed_in(request)
    signed.principal.require(scope_rules.OPERATOR)
    return _page(request, signed, org_id, after=after, done=done)


@router.post("/organizations/{org_id}/credits", name="console.admin.credits.add")
async def grant_credits(request: Request, org_id: str) -> Response:
    signed, form = await signed_form(request)
    signed.principal.require(scope_rules.OPERATOR)
    request.state.audit_org_id = org_id
    platform = platform_of(request)
    fields = {
        "amount": str(form.get("amount") or "").strip(),
        "note": str(form.get("note") or "").strip() or None,
    }

    def grant() -> None:
        body = validated(schemas.CreditTopUp, fields)
        with platform.db.session() as session:
            credits.top_up(
                session,
                org_id,
                body,
                actor_key_id=signed.principal.key_id,
                now=platform.clock.now(),
                currency=platform.settings.currency,
            )

    return await _submit(request, signed, org_id, grant, "credits", fields)


@router.post("/organizations/{org_id}/billing", name="console.admin.billing.update")
async def update_billing(request: Request, org_id: str) -> Response:
    signed, form = await signed_form(request)
    signed.principal.require(scope_rules.OPERATOR)
    request.state.audit_org_id = org_id
    platform = platform_of(request)
    cap = str(form.get("monthly_cap") or "").strip()
    fields: dict[str, Any] = {
        "prepaid": form.get("prepaid") == "on",
        "clear_monthly_cap": not cap,  # an empty cap field removes the cap
        "timezone": str(form.get("timezone") or "").strip() or None,
    }
    if cap:
        fields["monthly_cap"] = cap

    def update() -> None:
        body = validated(schemas.BillingSettings, fields)
        # Its own transaction, the caches dropped after the commit (as the API's route does).
        with platform.db.session() as session:
            credits.update_settings(session, org_id, body, platform.settings.currency, platform.clock.now())
        platform.metering.budgets.forget(org_id)
        platform.metering.prices.invalidate()

    return await _submit(request, signed, org_id, update, "billing", {**fields, "monthly_cap": cap})


async def _submit(
    request: Request, signed: SignedIn, org_id: str, action: Any, form_name: str, fields: dict[str, Any]
) -> Response:
    """Run a form's action: back to the page on success, else the page again with the error."""
    try:
        await run_in_threadpool(action)
    except errors.ValidationFailed as exc:
        error = exc
    else:
        return redirect(f"{PREFIX}/organizations/{org_id}?done={form_name}")
    return await run_in_threadpool(
        lambda: _page(
            request, signed, org_id, status=error.status, failed={form_name: error}, form={form_name: fields}
        )
    )


def _page(
    request: Request,
    signed: SignedIn,
    org_id: str,
    *,
    after: str | None = None,
    done: str | None = None,
    status: int = 200,
    failed: dict[str, errors.OpenMaaSError] | None = None,
    form: dict[str, dict[str, Any]] | None = None,
) -> Response:
    platform = platform_of(request)
    currency, now = platform.settings.currency, platform.clock.now()
    with platform.db.read_session() as session:
        org = tenancy.get_organization(session, org_id)  # 404 for an unknown id
        wallet = credits.credits(session, org_id, currency, now)
        ledger = credits.list_transactions(
            session, org_id, currency, limit=platform.settings.default_page_limit, after=after
        )
    return render(
        request,
        "organization.html",
        signed,
        status=status,
        org=org,
        wallet=wallet,
        ledger=ledger,
        after=after,
        done=done,
        period=period_of(now, org.timezone),
        failed=failed or {},
        form=form or {},
    )
