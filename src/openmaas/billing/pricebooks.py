"""Pricebooks: versioned plan prices, and the conversion of price components from and to JSON."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.billing.tables import Pricebook
from openmaas.ids import new_id
from openmaas.pagination import paginate
from openmaas.pricing.money import format_micros, to_micros
from openmaas.pricing.sheets import Component, Tier, parse_components, validate_components
from openmaas.schemas import billing as schemas
from openmaas.schemas.pages import Page


def components_from(
    items: Sequence[schemas.PriceComponentIn], param: str = "components"
) -> tuple[Component, ...]:
    components = tuple(
        Component(
            unit=item.unit,
            rate_micros=to_micros(item.price),
            resource_class=item.resource_class,
            model=item.model,
            included=item.included,
            tiers=tuple(Tier(tier.up_to, to_micros(tier.price)) for tier in item.tiers),
        )
        for item in items
    )
    try:
        validate_components(components)
    except ValueError as exc:
        raise errors.ValidationFailed(str(exc), param=param) from exc
    return components


def components_public(components: Sequence[Component]) -> list[schemas.PriceComponent]:
    return [
        schemas.PriceComponent(
            unit=c.unit,
            price=format_micros(c.rate_micros),
            resource_class=c.resource_class,
            model=c.model,
            included=c.included,
            tiers=[{"up_to": t.up_to, "price": format_micros(t.rate_micros)} for t in c.tiers],
        )
        for c in components
    ]


def pricebook_public(book: Pricebook) -> schemas.Pricebook:
    return schemas.Pricebook(
        id=book.id,
        plan=book.plan,
        version=book.version,
        effective_from=book.effective_from,
        currency=book.currency,
        monthly_fee=format_micros(book.monthly_fee_micros),
        components=components_public(parse_components(book.components)),
        requests_per_minute=book.requests_per_minute,
        tokens_per_minute=book.tokens_per_minute,
        created_at=book.created_at,
    )


def create_pricebook(
    session: Session, body: schemas.PricebookCreate, *, default_currency: str, now: datetime
) -> Pricebook:
    """Add the next version of `body.plan`; it applies from `effective_from` (never in the past,
    so usage already metered keeps the prices it had)."""
    effective_from = body.effective_from or now
    if effective_from < now:
        raise errors.ValidationFailed(
            "effective_from must not be in the past: metered usage keeps its prices.", param="effective_from"
        )
    components = components_from(body.components)
    latest = session.scalar(select(func.max(Pricebook.version)).where(Pricebook.plan == body.plan))
    latest_from = session.scalar(
        select(func.max(Pricebook.effective_from)).where(Pricebook.plan == body.plan)
    )
    if latest_from is not None and effective_from < latest_from:
        raise errors.ValidationFailed(
            "effective_from must not precede the plan's latest version.", param="effective_from"
        )
    book = Pricebook(
        id=new_id("pb_"),
        plan=body.plan,
        version=(latest or 0) + 1,
        effective_from=effective_from,
        currency=body.currency or default_currency,
        monthly_fee_micros=to_micros(body.monthly_fee),
        components=[c.to_json() for c in components],
        requests_per_minute=body.requests_per_minute,
        tokens_per_minute=body.tokens_per_minute,
        created_at=now,
    )
    session.add(book)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create took the same version number
        raise errors.Conflict("Another version of this plan was created at the same time; retry.") from exc
    return book


def list_pricebooks(
    session: Session, plan: str | None, *, limit: int, after: str | None
) -> Page[schemas.Pricebook]:
    query = select(Pricebook)
    if plan is not None:
        query = query.where(Pricebook.plan == plan)
    return paginate(session, query, Pricebook.id, limit=limit, after=after, to_public=pricebook_public)


def get_pricebook(session: Session, pricebook_id: str) -> Pricebook:
    book = session.get(Pricebook, pricebook_id)
    if book is None:
        raise errors.NotFound(f"No pricebook {pricebook_id!r}.", param="pricebook_id")
    return book
