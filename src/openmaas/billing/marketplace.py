"""The model marketplace: an organisation publishes a model at its own price; other organisations'
use of that model is priced by the listing, and the owner is credited its share when each buyer's
month is finalised (see invoices.py).

Seam: a model is an opaque reference string (`name:version`) here. When the model registry is
wired in, `publish` must check that `org_id` owns the referenced version, and deployments of a
listed model must carry the reference in their usage events' `model`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.billing import schemas
from openmaas.billing.models import Listing
from openmaas.billing.money import format_micros
from openmaas.billing.pricebooks import components_from, components_public
from openmaas.billing.pricing import parse_components
from openmaas.ids import new_id
from openmaas.pagination import Page, paginate


def listing_public(listing: Listing) -> schemas.Listing:
    return schemas.Listing(
        id=listing.id,
        model=listing.model,
        owner_organization_id=listing.owner_org_id,
        description=listing.description,
        currency=listing.currency,
        components=components_public(parse_components(listing.components)),
        platform_share_percent=format_micros(listing.platform_share_bps * 10_000),
        created_at=listing.created_at,
        withdrawn_at=listing.withdrawn_at,
    )


def _active(session: Session, model: str) -> Listing | None:
    return session.scalar(select(Listing).where(Listing.model == model, Listing.withdrawn_at.is_(None)))


def publish(
    session: Session,
    org_id: str,
    body: schemas.ListingCreate,
    *,
    platform_share_bps: int,
    currency: str,
    now: datetime,
) -> Listing:
    """List `body.model` at `body.components`; re-publishing changes the price from now on."""
    components = components_from(body.components)
    if any(c.model not in (None, body.model) for c in components):
        raise errors.ValidationFailed("A listing's components price only its own model.", param="components")
    current = _active(session, body.model)
    if current is not None and current.owner_org_id != org_id:
        raise errors.Conflict(f"The model {body.model!r} is listed by another organization.", param="model")
    if current is not None:
        current.withdrawn_at = now
    listing = Listing(
        id=new_id("lst_"),
        model=body.model,
        owner_org_id=org_id,
        description=body.description,
        currency=currency,
        components=[c.to_json() for c in components],
        platform_share_bps=platform_share_bps,
        created_at=now,
    )
    session.add(listing)
    session.flush()
    return listing


def withdraw(session: Session, org_id: str, listing_id: str, now: datetime) -> Listing:
    listing = session.get(Listing, listing_id)
    if listing is None or listing.owner_org_id != org_id:
        raise errors.NotFound(f"No listing {listing_id!r}.", param="listing_id")
    if listing.withdrawn_at is None:
        listing.withdrawn_at = now
    return listing


def catalogue(
    session: Session, *, owner_org_id: str | None, limit: int, after: str | None
) -> Page[schemas.Listing]:
    """Listed models: all live ones, or (with `owner_org_id`) an owner's, withdrawn ones included."""
    if owner_org_id is None:
        query = select(Listing).where(Listing.withdrawn_at.is_(None))
    else:
        query = select(Listing).where(Listing.owner_org_id == owner_org_id)
    return paginate(session, query, Listing.id, limit=limit, after=after, to_public=listing_public)
