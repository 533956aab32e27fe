"""The marketplace: browse the catalogue, subscribe to a listing (deploy it in one's own
organisation: its usage is then priced by the listing), publish one's own model version at a
price, withdraw it, and the earnings its sales credited — the same service calls and scopes as
`/v1/marketplace` (`models:read`/`models:write`), `/v1/deployments` (`deployments:write`) and
`/v1/credits/transactions` (`billing:read`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openmaas import errors
from openmaas.billing import credits, marketplace
from openmaas.billing.usage_report import model_names
from openmaas.console.pricebooks import PRICE_UNITS, price_fields
from openmaas.console.sessions import SignedIn
from openmaas.console.web import (
    PREFIX,
    ConsoleRoute,
    can,
    platform_of,
    redirect,
    render,
    signed_form,
    signed_in,
    validated,
)
from openmaas.schemas import billing as schemas
from openmaas.schemas.serving import DeploymentCreate
from openmaas.serving import service as deployments

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
After = Annotated[str | None, Query(max_length=100)]
Done = Annotated[str | None, Query(max_length=100)]


@router.get("/marketplace", name="console.marketplace")
def marketplace_page(request: Request, after: After = None, done: Done = None) -> Response:
    signed = signed_in(request)
    signed.principal.require("models:read")
    return _page(request, signed, after=after, done=done)


@router.post("/marketplace/listings", name="console.marketplace.publish")
async def publish(request: Request) -> Response:
    signed, form = await signed_form(request)
    signed.principal.require("models:write")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    typed, components = price_fields(form)
    fields: dict[str, Any] = {
        "model": str(form.get("model") or "").strip(),
        "description": str(form.get("description") or "").strip(),
        "components": components,
    }

    def create() -> str:
        body = validated(schemas.ListingCreate, fields)
        with platform.db.session() as session:
            listing = marketplace.publish(
                session,
                org_id,
                body,
                platform_share_bps=platform.settings.marketplace_platform_share_bps,
                currency=platform.settings.currency,
                now=platform.clock.now(),
            )
            return listing.id

    try:
        listing_id = await run_in_threadpool(create)
    except (errors.ValidationFailed, errors.NotFound, errors.Conflict) as exc:
        error = exc
    else:
        platform.metering.prices.invalidate()  # after the commit, as the API's route does
        return redirect(f"{PREFIX}/marketplace?done=published:{listing_id}")
    shown = {**fields, "prices": typed}
    return await run_in_threadpool(
        lambda: _page(request, signed, failed={"publish": error}, form=shown, status=error.status)
    )


@router.post("/marketplace/listings/{listing_id}/withdraw", name="console.marketplace.withdraw")
async def withdraw(request: Request, listing_id: str) -> Response:
    signed, _ = await signed_form(request)
    signed.principal.require("models:write")
    org_id = signed.principal.require_org()
    platform = platform_of(request)

    def remove() -> None:
        with platform.db.session() as session:
            marketplace.withdraw(session, org_id, listing_id, platform.clock.now())

    await run_in_threadpool(remove)
    platform.metering.prices.invalidate()
    return redirect(f"{PREFIX}/marketplace?done=withdrawn:{listing_id}")


@router.post("/marketplace/listings/{listing_id}/subscribe", name="console.marketplace.subscribe")
async def subscribe(request: Request, listing_id: str) -> Response:
    """Deploy the listing in the caller's organisation, under the name it chose."""
    signed, form = await signed_form(request)
    signed.principal.require("deployments:write")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    fields = {"model": listing_id, "name": str(form.get("name") or "").strip() or None}

    def deploy() -> tuple[str, str]:
        body = validated(DeploymentCreate, fields)
        with platform.db.session() as session:
            created = deployments.create(session, org_id, body, platform.clock.now())
        return created.id, created.name

    try:
        deployment_id, name = await run_in_threadpool(deploy)
    except (errors.ValidationFailed, errors.NotFound, errors.Conflict) as exc:
        error = exc
    else:
        platform.replicas.load(deployment_id)  # after the commit, as the API's route does
        return redirect(f"{PREFIX}/deployments/{name}")
    return await run_in_threadpool(
        lambda: _page(request, signed, failed={listing_id: error}, status=error.status)
    )


def _page(
    request: Request,
    signed: SignedIn,
    *,
    after: str | None = None,
    done: str | None = None,
    status: int = 200,
    failed: dict[str, errors.OpenMaaSError] | None = None,
    form: dict[str, Any] | None = None,
) -> Response:
    platform = platform_of(request)
    org_id = signed.principal.require_org()
    limit, currency = platform.settings.default_page_limit, platform.settings.currency
    earnings = None
    with platform.db.read_session() as session:
        catalogue = marketplace.catalogue(session, owner_org_id=None, limit=limit, after=after)
        mine = marketplace.catalogue(session, owner_org_id=org_id, limit=limit, after=None)
        names = model_names(session, org_id, (listing.model for listing in mine.data))
        if can(signed, "billing:read"):
            earnings = credits.list_transactions(
                session, org_id, currency, limit=limit, after=None, kind="marketplace_revenue"
            )
    return render(
        request,
        "marketplace.html",
        signed,
        status=status,
        catalogue=catalogue,
        mine=mine,
        names=names,
        earnings=earnings,
        after=after,
        done=done.split(":", 1) if done else None,
        org_id=org_id,
        price_units=PRICE_UNITS,
        currency=currency,
        failed=failed or {},
        form=form or {},
    )
