"""The operator's organisations: list (a page at a time) and create — the same service calls and
the same `operator` scope as `/v1/admin/organizations`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openmaas import errors
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
from openmaas.schemas import tenancy as schemas
from openmaas.tenancy import scopes as scope_rules
from openmaas.tenancy import service as tenancy

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


@router.get("/organizations", name="console.organizations")
def organizations_page(
    request: Request,
    after: Annotated[str | None, Query(max_length=100)] = None,
    created: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    signed = signed_in(request)
    signed.principal.require(scope_rules.OPERATOR)
    return _page(request, signed, after=after, created=created)


@router.post("/organizations", name="console.organizations.create")
async def create_organization(request: Request) -> Response:
    signed, form = await signed_form(request)
    signed.principal.require(scope_rules.OPERATOR)
    platform = platform_of(request)
    fields = {
        "name": str(form.get("name") or "").strip(),
        "plan": str(form.get("plan") or "").strip() or "default",
        "timezone": str(form.get("timezone") or "").strip() or "UTC",
    }

    def create() -> str:
        body = validated(schemas.OrganizationCreate, fields)
        with platform.db.session() as session:
            org = tenancy.create_organization(session, body, platform.clock.now())
            request.state.audit_org_id = org.id  # the entry is filed under the new organisation
            return org.name

    try:
        name = await run_in_threadpool(create)
    except (errors.ValidationFailed, errors.Conflict) as exc:
        error = exc
    else:
        return redirect(f"{PREFIX}/organizations?created={name}")
    return await run_in_threadpool(
        lambda: _page(request, signed, form_error=error, form=fields, status=error.status)
    )


def _page(
    request: Request, signed: SignedIn, *, after: str | None = None, status: int = 200, **context: object
) -> Response:
    platform = platform_of(request)
    with platform.db.read_session() as session:
        page = tenancy.list_organizations(session, limit=platform.settings.default_page_limit, after=after)
    return render(
        request,
        "organizations.html",
        signed,
        status=status,
        page=page,
        after=after,
        **{"created": None, "form_error": None, "form": {}, **context},
    )
