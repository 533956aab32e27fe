"""The audit log: a tenant's own organisation's entries (`audit:read`), or every organisation's
for the operator, filtered by action and organisation — the service calls and scopes of
`/v1/audit_log` and `/v1/admin/audit_log`. Console actions appear as `console.…`."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from openmaas.console.web import PREFIX, ConsoleRoute, platform_of, render, signed_in
from openmaas.tenancy import audit
from openmaas.tenancy import scopes as scope_rules

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

Text = Annotated[str | None, Query(max_length=100)]


@router.get("/audit", name="console.audit")
def audit_page(
    request: Request, after: Text = None, action: Text = None, organization_id: Text = None
) -> Response:
    signed = signed_in(request)
    principal = signed.principal
    operator = scope_rules.OPERATOR in principal.scopes
    if operator:
        org_id = organization_id or None
    else:
        principal.require("audit:read")
        org_id = principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        page = audit.list_entries(
            session,
            org_id=org_id,
            all_orgs=operator,
            action=action or None,
            limit=platform.settings.default_page_limit,
            after=after,
        )
    filters = {"action": action or "", "organization_id": (organization_id or "") if operator else ""}
    extra = urlencode({k: v for k, v in filters.items() if v})
    return render(
        request, "audit.html", signed, page=page, after=after, filters=filters, operator=operator, extra=extra
    )
