"""The model marketplace: the catalogue, and an organisation's own listings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from openmaas.api.deps import CreatorDep, PageDep, PlatformDep, ReadSessionDep, scope
from openmaas.api.responses import JSON_BODY, KEYED, errors
from openmaas.billing import marketplace
from openmaas.schemas import billing as schemas
from openmaas.schemas.pages import Page
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1/marketplace", tags=["marketplace"], responses=KEYED)
ModelsRead = Annotated[Principal, scope("models:read")]
ModelsWrite = Annotated[Principal, scope("models:write")]


@router.get("", response_model=Page[schemas.Listing], name="marketplace.catalogue", responses=errors(422))
def catalogue(session: ReadSessionDep, _: ModelsRead, page: PageDep) -> object:
    return marketplace.catalogue(session, owner_org_id=None, limit=page.limit, after=page.after)


@router.post(
    "/listings",
    status_code=201,
    response_model=schemas.Listing,
    name="marketplace.listings.create",
    responses=errors(*JSON_BODY, 404, 409),
)
def publish(
    body: schemas.ListingCreate, platform: PlatformDep, caller: ModelsWrite, create: CreatorDep
) -> object:
    response = create(
        body,
        lambda s: marketplace.listing_public(
            marketplace.publish(
                s,
                caller.require_org(),
                body,
                platform_share_bps=platform.settings.marketplace_platform_share_bps,
                currency=platform.settings.currency,
                now=platform.clock.now(),
            )
        ),
    )
    platform.metering.prices.invalidate()
    return response


@router.get(
    "/listings", response_model=Page[schemas.Listing], name="marketplace.listings.list", responses=errors(422)
)
def my_listings(session: ReadSessionDep, caller: ModelsRead, page: PageDep) -> object:
    return marketplace.catalogue(
        session, owner_org_id=caller.require_org(), limit=page.limit, after=page.after
    )


@router.delete(
    "/listings/{listing_id}",
    response_model=schemas.Listing,
    name="marketplace.listings.withdraw",
    responses=errors(404, 409, 422),
)
def withdraw(listing_id: str, platform: PlatformDep, caller: ModelsWrite) -> object:
    # Its own transaction: the cached prices are dropped after the commit, or a request in between
    # could cache the withdrawn listing's price again.
    with platform.db.session() as session:
        listing = marketplace.listing_public(
            marketplace.withdraw(session, caller.require_org(), listing_id, platform.clock.now())
        )
    platform.metering.prices.invalidate()
    return listing
