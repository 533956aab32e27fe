"""Helpers for billing tests: organisations, pricebooks and usage written straight to the ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from openmaas.billing import pricebooks
from openmaas.bootstrap import Platform
from openmaas.ids import new_id
from openmaas.metering.events import UsageEvent
from openmaas.metering.tables import BillingAccount
from openmaas.registry import service as registry
from openmaas.schemas import billing as schemas
from openmaas.schemas import tenancy as tenancy_schemas
from openmaas.tenancy import service as tenancy


def make_org(platform: Platform, name: str, *, timezone: str = "UTC", plan: str = "default") -> str:
    with platform.db.session() as session:
        body = tenancy_schemas.OrganizationCreate(name=name, plan=plan, timezone=timezone)
        return tenancy.create_organization(session, body, platform.clock.now()).id


def make_account(
    platform: Platform, org_id: str, *, prepaid_micros: int | None = None, cap_micros: int | None = None
) -> None:
    """The organisation's billing account: a prepaid wallet holding `prepaid_micros` and/or a
    monthly cap; nothing reserved or spent yet."""
    with platform.db.session() as session:
        session.add(
            BillingAccount(
                org_id=org_id,
                balance_micros=prepaid_micros or 0,
                prepaid=prepaid_micros is not None,
                monthly_cap_micros=cap_micros,
                reserved_micros=0,
                period="",
                period_spend_micros=0,
                unbilled_micros=0,
            )
        )


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


def make_version(platform: Platform, org_id: str, name: str, prefix: str = "mv_") -> str:
    """A model version in `org_id`'s registry (its row only: billing never opens the artifact)."""
    with platform.db.session() as session:
        _, version = registry.register_version(
            session,
            version_id=new_id(prefix),
            org_id=org_id,
            model_name=name,
            artifact_path=f"models/{name}",
            manifest={"task": "tabular-classification"},
            lineage={},
            now=platform.clock.now(),
        )
        return version.id
