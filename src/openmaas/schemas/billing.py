"""Request and response shapes for credits, budgets, limits, pricebooks, invoices, the
marketplace and usage (shared with the SDK). Money is a decimal string next to a `currency`."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from openmaas.schemas.json_types import JSON_INTEGER, Boolean, Integer
from openmaas.schemas.names import Label, ModelRefText, Text
from openmaas.schemas.times import Instant, TimeZone
from openmaas.units import RESOURCE_CLASSES, UNITS

# ASCII digits only (a regex's \d also takes other scripts' digits, which the document does not).
Amount = Annotated[str, Field(pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?$", examples=["12.50"])]
SignedAmount = Annotated[str, Field(pattern=r"^-?[0-9]{1,12}(\.[0-9]{1,6})?$", examples=["-3.00"])]
# What the document says of a top-up (the service refuses zero, naming `amount`).
_POSITIVE_AMOUNT = r"^(?!0*(\.0*)?$)[0-9]{1,12}(\.[0-9]{1,6})?$"
# Rate limits are stored in 32-bit integer columns (PostgreSQL's INTEGER).
MAX_PER_MINUTE = 2**31 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreditTopUp(_Strict):
    amount: Amount = Field(
        description='Amount to add, e.g. "12.50"', json_schema_extra={"pattern": _POSITIVE_AMOUNT}
    )
    note: Text | None = Field(default=None, max_length=300)


class CreditTransaction(BaseModel):
    object: Literal["credit_transaction"] = "credit_transaction"
    id: str
    kind: str
    amount: str
    balance_after: str
    currency: str
    created_at: datetime
    reference: str | None = None
    note: str | None = None


class Credits(BaseModel):
    """`GET /v1/credits`: the wallet, what is committed against it, and the month's spend."""

    object: Literal["credits"] = "credits"
    organization_id: str
    currency: str
    balance: str
    unbilled: str
    reserved: str
    available: str
    prepaid: bool
    monthly_cap: str | None
    period: str
    period_spend: str


class BillingSettings(_Strict):
    """`PATCH /v1/admin/organizations/{id}/billing`: only the fields given change."""

    prepaid: Boolean | None = None
    monthly_cap: Amount | None = None
    clear_monthly_cap: Boolean = False
    timezone: TimeZone | None = Field(default=None, max_length=64)


class KeyBudgetUpdate(_Strict):
    monthly_cap: Amount | None = Field(default=None, description="null removes the cap")


class KeyBudget(BaseModel):
    object: Literal["key_budget"] = "key_budget"
    key_id: str
    monthly_cap: str | None
    period: str
    period_spend: str
    currency: str


class RateLimits(_Strict):
    requests_per_minute: Annotated[int, Field(ge=1, le=MAX_PER_MINUTE), JSON_INTEGER] | None = None
    tokens_per_minute: Annotated[int, Field(ge=1, le=MAX_PER_MINUTE), JSON_INTEGER] | None = None


class RateLimitsPublic(RateLimits):
    object: Literal["rate_limits"] = "rate_limits"
    subject_id: str


class TierIn(_Strict):
    up_to: Annotated[int, Field(ge=1), JSON_INTEGER] | None = Field(
        default=None, description="Billable quantity where the tier ends"
    )
    price: Amount


class PriceComponentIn(_Strict):
    unit: str = Field(description=f"One of {list(UNITS)}", json_schema_extra={"enum": list(UNITS)})
    price: Amount = Field(
        description="Per request/row, per 1K tokens, per compute-second, per GB, per GB-month"
    )
    resource_class: str | None = Field(default=None, json_schema_extra={"enum": [*RESOURCE_CLASSES, None]})
    model: Label | None = Field(default=None, max_length=200, description="Only for this model (an override)")
    included: Integer = Field(default=0, ge=0, description="Free quantity each month, in base units")
    tiers: list[TierIn] = Field(default_factory=list, description="Graduated tiers; replace `price`")

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, value: str) -> str:
        if value not in UNITS:
            raise ValueError(f"must be one of {list(UNITS)}")
        return value

    @field_validator("resource_class")
    @classmethod
    def _known_class(cls, value: str | None) -> str | None:
        if value is not None and value not in RESOURCE_CLASSES:
            raise ValueError(f"must be one of {list(RESOURCE_CLASSES)}")
        return value


class PriceComponent(BaseModel):
    unit: str
    price: str
    resource_class: str | None = None
    model: str | None = None
    included: int = 0
    tiers: list[dict[str, Any]] = Field(default_factory=list)


class PricebookCreate(_Strict):
    plan: Label = Field(default="default", min_length=1, max_length=64)
    effective_from: Instant | None = Field(default=None, description="Defaults to now")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    monthly_fee: Amount = "0"
    components: list[PriceComponentIn] = Field(default_factory=list)
    requests_per_minute: Annotated[int, Field(ge=1, le=MAX_PER_MINUTE), JSON_INTEGER] | None = None
    tokens_per_minute: Annotated[int, Field(ge=1, le=MAX_PER_MINUTE), JSON_INTEGER] | None = None


class Pricebook(BaseModel):
    object: Literal["pricebook"] = "pricebook"
    id: str
    plan: str
    version: int
    effective_from: datetime
    currency: str
    monthly_fee: str
    components: list[PriceComponent]
    requests_per_minute: int | None
    tokens_per_minute: int | None
    created_at: datetime


class ListingCreate(_Strict):
    model: ModelRefText = Field(
        min_length=1,
        max_length=200,
        description="One of your model versions: name:version, name@alias or its id (mv_…); "
        "listed under its version id",
    )
    description: Text = Field(default="", max_length=500)
    components: list[PriceComponentIn] = Field(min_length=1)


class Listing(BaseModel):
    object: Literal["listing"] = "listing"
    id: str
    model: str
    owner_organization_id: str
    description: str
    currency: str
    components: list[PriceComponent]
    platform_share_percent: str
    created_at: datetime
    withdrawn_at: datetime | None = None
    available: bool = Field(
        default=True, description="False once withdrawn or once its owner deleted the listed version"
    )


class InvoiceLine(BaseModel):
    kind: Literal["usage", "plan_fee"]
    description: str
    unit: str | None = None
    model: str | None = None
    resource_class: str | None = None
    quantity: int | None = None
    included: int | None = None
    amount: str
    price_ref: str | None = None


class MarketplaceSale(BaseModel):
    """A buyer's month of one of this organisation's listed models: gross, the platform's fee,
    and the net credited to this organisation's wallet when the buyer's month was finalised."""

    model: str
    listing_id: str
    buyer_invoice_id: str
    gross: str
    platform_fee: str
    net: str


class Invoice(BaseModel):
    object: Literal["invoice"] = "invoice"
    id: str | None
    organization_id: str
    period: str
    period_start: datetime
    period_end: datetime
    timezone: str
    status: Literal["draft", "finalized"]
    currency: str
    lines: list[InvoiceLine]
    subtotal: str
    credit_applied: str
    amount_due: str
    finalized_at: datetime | None = None
    marketplace_sales: list[MarketplaceSale] = Field(default_factory=list)
    marketplace_net_credited: str = "0.00"

    def to_csv(self) -> str:
        """The invoice as CSV: one row per line, then subtotal, credit applied and amount due."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "period",
                "kind",
                "description",
                "unit",
                "model",
                "resource_class",
                "quantity",
                "included",
                "amount",
                "currency",
            ]
        )
        for line in self.lines:
            writer.writerow(
                [
                    self.period,
                    line.kind,
                    line.description,
                    line.unit or "",
                    line.model or "",
                    line.resource_class or "",
                    line.quantity if line.quantity is not None else "",
                    line.included if line.included is not None else "",
                    line.amount,
                    self.currency,
                ]
            )
        for label, amount in (
            ("subtotal", self.subtotal),
            ("credit_applied", self.credit_applied),
            ("amount_due", self.amount_due),
        ):
            writer.writerow([self.period, label, "", "", "", "", "", "", amount, self.currency])
        return out.getvalue()


class InvoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Invoice]


_MODEL_NAME = Field(
    default=None,
    description="The model by name: `name:version` for your own versions, the listing (`lst_…`) for a "
    "marketplace model; null when unknown (a deleted version)",
)


class UsageBucket(BaseModel):
    """Usage of one unit summed over the report's other columns (quantities of different units
    are never added: a request and a token are not one quantity)."""

    object: Literal["usage_bucket"] = "usage_bucket"
    day: str | None = None
    model: str | None = None
    model_name: str | None = _MODEL_NAME
    deployment: str | None = None
    api_key_id: str | None = None
    resource_class: str | None = Field(default=None, description="cpu or gpu, of compute_ms")
    unit: str = Field(description=f"One of {list(UNITS)}")
    quantity: int
    cost: str
    events: int


class UsageEventPublic(BaseModel):
    object: Literal["usage_event"] = "usage_event"
    request_id: str
    unit: str
    quantity: int
    cost: str
    occurred_at: datetime
    model: str | None
    model_name: str | None = _MODEL_NAME
    deployment: str | None
    api_key_id: str | None
    resource_class: str | None


class UsageReport(BaseModel):
    object: Literal["list"] = "list"
    currency: str
    granularity: Literal["bucket", "event"]
    data: list[UsageBucket] | list[UsageEventPublic]
    has_more: bool = False
    last_id: str | None = None
    unpriced: bool = Field(
        default=False,
        description="Some of this usage was metered while no pricebook or listing priced it, so it "
        "cost nothing: an operator sets prices with `POST /v1/admin/pricebooks`",
    )
