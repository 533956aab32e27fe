"""The organisation's API keys: list (a page at a time), create with scopes and expiry (the
secret shown once), revoke — the same service calls and scope checks as `/v1/api_keys`."""

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

# The scopes offered on the form, in the order a person reads them.
SCOPES = (
    scope_rules.ADMIN,
    scope_rules.INFERENCE,
    *(f"{resource}:{action}" for resource in scope_rules.RESOURCES for action in ("read", "write")),
)
EXPIRIES = (("", "Never"), ("1d", "1 day"), ("7d", "7 days"), ("30d", "30 days"), ("90d", "90 days"))


@router.get("/keys", name="console.keys")
def keys_page(
    request: Request,
    after: Annotated[str | None, Query(max_length=100)] = None,
    revoked: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    signed = signed_in(request)
    signed.principal.require("api_keys:read")
    org_id = signed.principal.require_org()
    return _page(request, signed, org_id, after=after, revoked=revoked)


@router.post("/keys", name="console.api_keys.create")
async def create_key(request: Request) -> Response:
    signed, form = await signed_form(request)
    signed.principal.require("api_keys:write")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    fields = {
        "name": str(form.get("name") or "").strip() or "default",
        "scopes": [str(s) for s in form.getlist("scopes")] or None,
        "expires_in": str(form.get("expires_in") or "") or None,
    }

    def create() -> schemas.ApiKeyCreated:
        body = validated(schemas.ApiKeyCreate, fields)
        with platform.db.session() as session:
            return tenancy.create_api_key(
                session,
                platform.hasher,
                org_id=org_id,
                body=body,
                creator_key_id=signed.principal.key_id,
                creator_scopes=signed.principal.scopes,
                now=platform.clock.now(),
            )

    try:
        created = await run_in_threadpool(create)
    except (errors.ValidationFailed, errors.PermissionDenied) as exc:
        error = exc
    else:
        return await run_in_threadpool(lambda: _page(request, signed, org_id, created=created))
    return await run_in_threadpool(
        lambda: _page(request, signed, org_id, form_error=error, form=fields, status=error.status)
    )


@router.post("/keys/{key_id}/revoke", name="console.api_keys.revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    signed, _ = await signed_form(request)
    signed.principal.require("api_keys:write")
    org_id = signed.principal.require_org()
    platform = platform_of(request)

    def revoke() -> None:
        with platform.db.session() as session:
            tenancy.revoke_api_key(session, org_id, key_id, platform.clock.now())

    await run_in_threadpool(revoke)
    platform.authenticator.forget(key_id)  # after the commit, as the API does
    return redirect(f"{PREFIX}/keys?revoked={key_id}")


def _page(
    request: Request,
    signed: SignedIn,
    org_id: str,
    *,
    after: str | None = None,
    status: int = 200,
    **context: object,
) -> Response:
    platform = platform_of(request)
    with platform.db.read_session() as session:
        page = tenancy.list_api_keys(session, org_id, limit=platform.settings.default_page_limit, after=after)
    context.setdefault("form", {})
    return render(
        request,
        "keys.html",
        signed,
        status=status,
        page=page,
        after=after,
        scopes=SCOPES,
        expiries=EXPIRIES,
        now=platform.clock.now(),
        **{"created": None, "form_error": None, "revoked": None, **context},
    )
