"""Invoices for tenants (`/v1/invoices`) and the operator's billing routes: credit top-ups,
billing settings, key budgets, rate-limit overrides, pricebooks and month-end finalisation."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from openmaas.api.deps import (
    AuditedTargetOrg,
    CreatorDep,
    Operator,
    PageDep,
    PlatformDep,
    ReadSessionDep,
    SessionDep,
    TargetOrg,
    scope,
)
from openmaas.api.responses import JSON_BODY, KEYED, errors
from openmaas.billing import credits, invoices, pricebooks
from openmaas.bootstrap import Platform
from openmaas.schemas import billing as schemas
from openmaas.schemas.pages import Page
from openmaas.schemas.times import PERIOD_PATTERN
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1", tags=["billing"], responses=KEYED)
BillingRead = Annotated[Principal, scope("billing:read")]
# `format=csv`: the statement as a spreadsheet, one line per charge.
_CSV = {"content": {"text/csv": {"schema": {"type": "string"}}}}
# Checked by `invoices.statement` (422 naming `period`); the document states the same pattern.
Period = Annotated[str, Path(description="A month, YYYY-MM", json_schema_extra={"pattern": PERIOD_PATTERN})]


def _invoice_response(invoice: schemas.Invoice, fmt: str) -> Response:
    if fmt == "csv":
        headers = {"Content-Disposition": f'attachment; filename="invoice-{invoice.period}.csv"'}
        return Response(invoice.to_csv(), media_type="text/csv", headers=headers)
    return Response(invoice.model_dump_json(), media_type="application/json")


def _statement(session: Session, platform: Platform, org_id: str, period: str) -> schemas.Invoice:
    return invoices.statement(
        session, org_id, period, now=platform.clock.now(), currency=platform.settings.currency
    )


@router.get("/invoices", response_model=schemas.InvoiceList, name="invoices.list")
def list_invoices(session: ReadSessionDep, platform: PlatformDep, caller: BillingRead) -> object:
    data = invoices.list_statements(
        session, caller.require_org(), now=platform.clock.now(), currency=platform.settings.currency
    )
    return schemas.InvoiceList(data=data)


@router.get(
    "/invoices/{period}",
    response_model=schemas.Invoice,
    name="invoices.get",
    responses={200: _CSV, **errors(422)},
)
def get_invoice(
    period: Period,
    session: ReadSessionDep,
    platform: PlatformDep,
    caller: BillingRead,
    format: Literal["json", "csv"] = "json",
) -> Response:
    return _invoice_response(_statement(session, platform, caller.require_org(), period), format)


@router.get(
    "/admin/organizations/{org_id}/invoices/{period}",
    response_model=schemas.Invoice,
    name="admin.invoices.get",
    responses={200: _CSV, **errors(404, 422)},
)
def admin_get_invoice(
    org_id: TargetOrg,
    period: Period,
    session: ReadSessionDep,
    platform: PlatformDep,
    _: Operator,
    format: Literal["json", "csv"] = "json",
) -> Response:
    return _invoice_response(_statement(session, platform, org_id, period), format)


@router.post("/admin/invoices/finalize", name="admin.invoices.finalize")
def finalize_invoices(session: SessionDep, platform: PlatformDep, _: Operator) -> dict[str, list[str]]:
    """Finalise every ended month not yet finalised (run after each month ends; safe to repeat)."""
    ids = invoices.finalize_due(session, now=platform.clock.now(), currency=platform.settings.currency)
    return {"finalized": ids}


@router.post(
    "/admin/organizations/{org_id}/credits",
    status_code=201,
    response_model=schemas.CreditTransaction,
    name="admin.credits.add",
    responses=errors(404, *JSON_BODY, 409),
)
def add_credits(
    org_id: AuditedTargetOrg,
    body: schemas.CreditTopUp,
    platform: PlatformDep,
    operator: Operator,
    create: CreatorDep,
) -> object:
    return create(
        body,
        lambda s: credits.top_up(
            s,
            org_id,
            body,
            actor_key_id=operator.key_id,
            now=platform.clock.now(),
            currency=platform.settings.currency,
        ),
    )


@router.get(
    "/admin/organizations/{org_id}/credits",
    response_model=schemas.Credits,
    name="admin.credits.get",
    responses=errors(404, 422),
)
def admin_get_credits(
    org_id: TargetOrg, session: ReadSessionDep, platform: PlatformDep, _: Operator
) -> object:
    return credits.credits(session, org_id, platform.settings.currency, platform.clock.now())


@router.patch(
    "/admin/organizations/{org_id}/billing",
    response_model=schemas.Credits,
    name="admin.billing.update",
    responses=errors(404, *JSON_BODY),
)
def update_billing(
    org_id: AuditedTargetOrg, body: schemas.BillingSettings, platform: PlatformDep, _: Operator
) -> object:
    # Its own transaction: the caches are dropped after the commit, or a request in between could
    # cache the old settings again.
    with platform.db.session() as session:
        result = credits.update_settings(
            session, org_id, body, platform.settings.currency, platform.clock.now()
        )
    platform.metering.budgets.forget(org_id)
    platform.metering.prices.invalidate()
    return result


@router.put(
    "/admin/organizations/{org_id}/api_keys/{key_id}/budget",
    response_model=schemas.KeyBudget,
    name="admin.key_budget.set",
    responses=errors(404, *JSON_BODY),
)
def set_key_budget(
    org_id: AuditedTargetOrg, key_id: str, body: schemas.KeyBudgetUpdate, platform: PlatformDep, _: Operator
) -> object:
    # Its own transaction: the cached budgets are dropped after the commit (see update_billing).
    with platform.db.session() as session:
        result = credits.set_key_budget(
            session, org_id, key_id, body, platform.settings.currency, platform.clock.now()
        )
    platform.metering.budgets.forget(org_id)
    return result


@router.put(
    "/admin/organizations/{org_id}/rate_limits",
    response_model=schemas.RateLimitsPublic,
    name="admin.rate_limits.org.set",
    responses=errors(404, *JSON_BODY),
)
def set_org_limits(org_id: TargetOrg, body: schemas.RateLimits, platform: PlatformDep, _: Operator) -> object:
    return _set_limits(platform, org_id, None, body)


@router.put(
    "/admin/organizations/{org_id}/api_keys/{key_id}/rate_limits",
    response_model=schemas.RateLimitsPublic,
    name="admin.rate_limits.key.set",
    responses=errors(404, *JSON_BODY),
)
def set_key_limits(
    org_id: TargetOrg, key_id: str, body: schemas.RateLimits, platform: PlatformDep, _: Operator
) -> object:
    return _set_limits(platform, org_id, key_id, body)


def _set_limits(platform: Platform, org_id: str, key_id: str | None, body: schemas.RateLimits) -> object:
    # Its own transaction: the cached limits are dropped after the commit (see update_billing).
    with platform.db.session() as session:
        result = credits.set_rate_limits(session, org_id, key_id or org_id, body)
    platform.metering.limits.forget()
    return result


@router.post(
    "/admin/pricebooks",
    status_code=201,
    response_model=schemas.Pricebook,
    name="admin.pricebooks.create",
    responses=errors(*JSON_BODY, 409),
)
def create_pricebook(
    body: schemas.PricebookCreate, platform: PlatformDep, _: Operator, create: CreatorDep
) -> object:
    response = create(
        body,
        lambda s: pricebooks.pricebook_public(
            pricebooks.create_pricebook(
                s, body, default_currency=platform.settings.currency, now=platform.clock.now()
            )
        ),
    )
    platform.metering.prices.invalidate()
    platform.metering.limits.forget()
    return response


@router.get(
    "/admin/pricebooks",
    response_model=Page[schemas.Pricebook],
    name="admin.pricebooks.list",
    responses=errors(422),
)
def list_pricebooks(
    session: ReadSessionDep,
    _: Operator,
    page: PageDep,
    plan: Annotated[str | None, Query(max_length=64)] = None,
) -> object:
    return pricebooks.list_pricebooks(session, plan, limit=page.limit, after=page.after)


@router.get(
    "/admin/pricebooks/{pricebook_id}",
    response_model=schemas.Pricebook,
    name="admin.pricebooks.get",
    responses=errors(404, 422),
)
def get_pricebook(pricebook_id: str, session: ReadSessionDep, _: Operator) -> object:
    return pricebooks.pricebook_public(pricebooks.get_pricebook(session, pricebook_id))
