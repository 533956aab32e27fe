"""A tenant's usage and wallet: `GET /v1/usage`, `GET /v1/credits` and its transactions."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from openmaas.api.deps import PageDep, PlatformDep, ReadSessionDep, scope
from openmaas.api.responses import KEYED, errors
from openmaas.billing import credits
from openmaas.billing import usage_report as report
from openmaas.schemas import billing as schemas
from openmaas.schemas.pages import Page
from openmaas.schemas.times import Instant
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1", tags=["usage"], responses=KEYED)

UsageRead = Annotated[Principal, scope("usage:read")]
BillingRead = Annotated[Principal, scope("billing:read")]
_GROUP = "|".join(report.GROUPS)
_GROUPS_PATTERN = rf"^({_GROUP})?(,({_GROUP})?)*$"  # `report.usage` checks them, naming `group_by`


@router.get("/usage", response_model=schemas.UsageReport, name="usage.get", responses=errors(422))
def get_usage(
    session: ReadSessionDep,
    platform: PlatformDep,
    caller: UsageRead,
    page: PageDep,
    start: Instant | None = None,
    end: Instant | None = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    api_key_id: Annotated[str | None, Query(max_length=40)] = None,
    group_by: Annotated[
        list[Annotated[str, Field(json_schema_extra={"pattern": _GROUPS_PATTERN})]] | None,
        Query(
            description=f"Any of {list(report.GROUPS)}, comma-separated or repeated; "
            "usage is always summed per unit as well"
        ),
    ] = None,
    granularity: Literal["bucket", "event"] = "bucket",
) -> object:
    org_id = caller.require_org()
    groups = [g for item in group_by or ["unit"] for g in item.split(",") if g]
    filters = report.UsageFilter(start=start, end=end, model=model, api_key_id=api_key_id)
    currency = platform.settings.currency
    if granularity == "event":
        return report.events(session, org_id, filters, currency=currency, limit=page.limit, after=page.after)
    return report.usage(session, org_id, filters, group_by=groups, currency=currency)


@router.get("/credits", response_model=schemas.Credits, name="credits.get")
def get_credits(session: ReadSessionDep, platform: PlatformDep, caller: BillingRead) -> object:
    return credits.credits(session, caller.require_org(), platform.settings.currency, platform.clock.now())


@router.get(
    "/credits/transactions",
    response_model=Page[schemas.CreditTransaction],
    name="credits.transactions.list",
    responses=errors(422),
)
def list_transactions(
    session: ReadSessionDep, platform: PlatformDep, caller: BillingRead, page: PageDep
) -> object:
    return credits.list_transactions(
        session, caller.require_org(), platform.settings.currency, limit=page.limit, after=page.after
    )
