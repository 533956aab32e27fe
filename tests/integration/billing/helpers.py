"""Helpers for billing tests: organisations, pricebooks and usage written straight to the ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from openmaas.billing import pricebooks, schemas
from openmaas.bootstrap import Platform
from openmaas.metering.events import UsageEvent
from openmaas.tenancy import schemas as tenancy_schemas
from openmaas.tenancy import service as tenancy


def make_org(platform: Platform, name: str, *, timezone: str = "UTC", plan: str = "default") -> str:
    with platform.db.session() as session:
        body = tenancy_schemas.OrganizationCreate(name=name, plan=plan, timezone=timezone)
        return tenancy.create_organization(session, body, platform.clock.now()).id


def make_pricebook(platform: Platform, components: list[dict[str, Any]], **fields: Any) -> str:
    body = schemas.PricebookCreate(components=[schemas.PriceComponentIn(**c) for c in components], **fields)
    with platform.db.session() as session:
        book = pricebooks.create_pricebook(session, body, default_currency="USD", now=platform.clock.now())
    platform.metering.prices.invalidate()
    return book.id


def meter(
    platform: Platform,
    event_id: str,
    org_id: str,
    at: datetime,
    quantities: dict[str, int],
    model: str | None = None,
) -> None:
    platform.meter.record_and_wait(UsageEvent(event_id, org_id, quantities, at, model=model))
