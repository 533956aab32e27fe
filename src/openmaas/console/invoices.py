"""Invoices: the organisation's months (a draft for the current one, the stored document once
finalised) and one invoice as a printable page, its lines as the billing service computes them —
the same calls and `billing:read` scope as `/v1/invoices`. The operator reads any organisation's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from openmaas.billing import invoices
from openmaas.billing.usage_report import model_names
from openmaas.console.web import PREFIX, ConsoleRoute, platform_of, render, signed_in
from openmaas.tenancy import scopes as scope_rules
from openmaas.tenancy import service as tenancy

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
Period = Annotated[str, Path(max_length=20)]


@router.get("/invoices", name="console.invoices")
def invoices_page(request: Request) -> Response:
    signed = signed_in(request)
    signed.principal.require("billing:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        months = invoices.list_statements(
            session, org_id, now=platform.clock.now(), currency=platform.settings.currency
        )
    return render(request, "invoices.html", signed, months=months)


@router.get("/invoices/{period}", name="console.invoice")
def invoice_page(request: Request, period: Period) -> Response:
    signed = signed_in(request)
    signed.principal.require("billing:read")
    return _invoice(request, signed.principal.require_org(), period, back=f"{PREFIX}/invoices")


@router.get("/organizations/{org_id}/invoices/{period}", name="console.admin.invoice")
def admin_invoice_page(request: Request, org_id: str, period: Period) -> Response:
    signed_in(request).principal.require(scope_rules.OPERATOR)
    return _invoice(request, org_id, period, back=f"{PREFIX}/organizations/{org_id}")


def _invoice(request: Request, org_id: str, period: str, *, back: str) -> Response:
    platform = platform_of(request)
    with platform.db.read_session() as session:  # 422 naming `period` for a bad month, 404 for no org
        invoice = invoices.statement(
            session, org_id, period, now=platform.clock.now(), currency=platform.settings.currency
        )
        org = tenancy.get_organization(session, org_id)
        names = model_names(session, org_id, (line.model for line in invoice.lines))
    return render(
        request, "invoice.html", request.state.console, invoice=invoice, org=org, names=names, back=back
    )
