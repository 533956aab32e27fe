"""The model marketplace: an organisation publishes a model at its own price; other organisations'
use of that model is priced by the listing, and the owner is credited its share when each buyer's
month is finalised (see invoices.py).

A listing names one model version of its publisher's registry, by the version's id (`mv_…`), which
is what served requests carry in their usage events' `model`, so their usage is priced by the
listing. Publishing resolves the publisher's reference (`name:version`, `name@alias` or the id)
in the publisher's own organisation only: another organisation's version is a 404 like a missing
one. The registry refuses to delete a version while a live listing sells it (409
`version_in_use`: `listings_holding` tells it); one deleted anyway (a delete racing the publish:
listings hold no foreign key to versions) stays in its owner's list, marked unavailable, is hidden
from the catalogue, and `listed_version` refuses it with a clear error.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.billing.pricebooks import components_from, components_public
from openmaas.billing.tables import Listing
from openmaas.ids import new_id
from openmaas.pagination import paginate
from openmaas.pricing.money import format_micros
from openmaas.pricing.sheets import parse_components
from openmaas.registry import service as registry
from openmaas.registry.tables import ModelVersion, RegisteredModel
from openmaas.schemas import billing as schemas
from openmaas.schemas.pages import Page

# A model version's id: `mv_…`; imports made `ver_…` ids before every version got `mv_` (their rows
# keep them).
_VERSION_ID_PREFIXES = ("mv_", "ver_")
_LISTING_ID_PREFIX = "lst_"


def listing_public(listing: Listing, *, available: bool = True) -> schemas.Listing:
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
        available=available and listing.withdrawn_at is None,
    )


def owned_version(session: Session, org_id: str, ref: str) -> ModelVersion:
    """The version `ref` (`name:version`, `name@alias` or `mv_…`) of `org_id`'s registry, or 404."""
    if ref.startswith(_VERSION_ID_PREFIXES):
        version = session.get(ModelVersion, ref)
        if version is None or version.org_id != org_id:
            raise errors.NotFound(f"No model version {ref!r}.", param="model")
        return version
    return registry.resolve(session, org_id, ref)[1]


def listed_version(session: Session, listing_id: str) -> tuple[Listing, ModelVersion]:
    """A live listing and the version it sells, for a buyer deploying or calling it.

    404 for no such listing; 409 `listing_unavailable` when it was withdrawn or its owner deleted
    the version since it was published."""
    listing = session.get(Listing, listing_id)
    if listing is None:
        raise errors.NotFound(f"No listing {listing_id!r}.", param="listing_id")
    if listing.withdrawn_at is not None:
        raise errors.Conflict(
            f"Listing {listing_id!r} was withdrawn by its owner.",
            param="listing_id",
            code="listing_unavailable",
        )
    version = session.get(ModelVersion, listing.model)
    if version is None or version.org_id != listing.owner_org_id:
        raise errors.Conflict(
            f"Listing {listing_id!r} is unavailable: its owner deleted the model version it sold.",
            param="listing_id",
            code="listing_unavailable",
        )
    return listing, version


def listings_holding(session: Session, version: ModelVersion) -> list[str]:
    """The registry's "who holds this version" (`registry.in_use`), for the marketplace: its live
    listings (withdrawn ones do not hold it)."""
    live = session.scalars(
        select(Listing.id).where(Listing.model == version.id, Listing.withdrawn_at.is_(None))
    )
    ids = sorted(live)
    return [f"listed on the marketplace as {', '.join(ids)}"] if ids else []


def _active(session: Session, model: str) -> Listing | None:
    return session.scalar(select(Listing).where(Listing.model == model, Listing.withdrawn_at.is_(None)))


def deployable_version(session: Session, org_id: str, ref: str) -> tuple[RegisteredModel, ModelVersion]:
    """What a deployment of `ref` runs: a live listing (`lst_…`, any organisation's) or a version
    of `org_id`'s own registry. The deploy path's one call; usage of a listed version is priced by
    its listing because served requests carry the version id as their `model`."""
    if not ref.startswith(_LISTING_ID_PREFIX):
        return registry.resolve(session, org_id, ref)
    _, version = listed_version(session, ref)
    model = session.get(RegisteredModel, version.model_id)
    if model is None:  # the version's model row went with it (cascade): the listing is gone too
        raise errors.Conflict(f"Listing {ref!r} is unavailable.", param="model", code="listing_unavailable")
    return model, version


def publish(
    session: Session,
    org_id: str,
    body: schemas.ListingCreate,
    *,
    platform_share_bps: int,
    currency: str,
    now: datetime,
) -> Listing:
    """List `org_id`'s version `body.model` at `body.components` (404 unless `org_id` owns it);
    re-publishing changes the price from now on."""
    version = owned_version(session, org_id, body.model)
    components = components_from(body.components)
    if any(c.model not in (None, body.model, version.id) for c in components):
        raise errors.ValidationFailed("A listing's components price only its own model.", param="components")
    components = tuple(replace(c, model=None) for c in components)
    current = _active(session, version.id)
    if current is not None:  # only its owner can have listed it: versions are never shared
        current.withdrawn_at = now
    listing = Listing(
        id=new_id("lst_"),
        model=version.id,
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
    """Listed models: all live ones whose version still exists, or (with `owner_org_id`) an
    owner's, withdrawn and unavailable ones included."""
    if owner_org_id is None:
        query = select(Listing).where(
            Listing.withdrawn_at.is_(None),
            exists().where(ModelVersion.id == Listing.model, ModelVersion.org_id == Listing.owner_org_id),
        )
        return paginate(session, query, Listing.id, limit=limit, after=after, to_public=listing_public)
    query = select(Listing).where(Listing.owner_org_id == owner_org_id)
    page = paginate(session, query, Listing.id, limit=limit, after=after, to_public=listing_public)
    listed = [item.model for item in page.data]
    present = set(
        session.scalars(
            select(ModelVersion.id).where(ModelVersion.id.in_(listed), ModelVersion.org_id == owner_org_id)
        )
    )
    page.data = [
        item.model_copy(update={"available": item.available and item.model in present}) for item in page.data
    ]
    return page
