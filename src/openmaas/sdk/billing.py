"""SDK resources for invoices, the marketplace and the operator's billing calls:
`client.invoices.get("2026-11")`, `client.admin.billing.add_credits("acme", "25.00")`."""

from __future__ import annotations

from typing import Any

from openmaas.schemas.billing import (
    BillingSettings,
    Credits,
    CreditTopUp,
    CreditTransaction,
    Invoice,
    InvoiceList,
    KeyBudget,
    KeyBudgetUpdate,
    Listing,
    ListingCreate,
    Pricebook,
    PricebookCreate,
    PriceComponentIn,
    RateLimits,
    RateLimitsPublic,
)
from openmaas.schemas.pages import Page
from openmaas.sdk.calls import Call, Plan, creating, json_body
from openmaas.sdk.resource import Resource, S, endpoint


class Invoices(Resource[S]):
    @endpoint
    def list(self) -> Call[InvoiceList]:
        """Every month since the organization was created, newest first (the current one a draft)."""
        return Call("GET", "/v1/invoices", InvoiceList)

    @endpoint
    def get(self, period: str) -> Call[Invoice]:
        """The invoice for `period` (`YYYY-MM`); `.to_csv()` gives its CSV."""
        return Call("GET", f"/v1/invoices/{period}", Invoice)


class Marketplace(Resource[S]):
    @endpoint
    def catalogue(self, *, limit: int | None = None, after: str | None = None) -> Call[Page[Listing]]:
        return Call("GET", "/v1/marketplace", Page[Listing], params={"limit": limit, "after": after})

    @endpoint
    def listings(self, *, limit: int | None = None, after: str | None = None) -> Call[Page[Listing]]:
        """This organization's own listings, withdrawn ones included."""
        params = {"limit": limit, "after": after}
        return Call("GET", "/v1/marketplace/listings", Page[Listing], params=params)

    @endpoint
    def publish(
        self,
        model: str,
        components: list[dict[str, Any]],
        *,
        description: str = "",
        idempotency_key: str | None = None,
    ) -> Call[Listing]:
        listing = ListingCreate(
            model=model, description=description, components=[PriceComponentIn(**c) for c in components]
        )
        return creating("/v1/marketplace/listings", Listing, json_body(listing), idempotency_key)

    @endpoint
    def withdraw(self, listing_id: str) -> Call[Listing]:
        return Call("DELETE", f"/v1/marketplace/listings/{listing_id}", Listing)


class AdminBilling(Resource[S]):
    """Operator billing calls: credits, budgets, limits, pricebooks and month-end finalisation."""

    @endpoint
    def add_credits(
        self, org: str, amount: str, *, note: str | None = None, idempotency_key: str | None = None
    ) -> Call[CreditTransaction]:
        top_up = json_body(CreditTopUp(amount=amount, note=note))
        path = f"/v1/admin/organizations/{org}/credits"
        return creating(path, CreditTransaction, top_up, idempotency_key)

    @endpoint
    def credits(self, org: str) -> Call[Credits]:
        return Call("GET", f"/v1/admin/organizations/{org}/credits", Credits)

    @endpoint
    def update(self, org: str, **settings: Any) -> Call[Credits]:
        """`prepaid=`, `monthly_cap="100.00"`, `clear_monthly_cap=True`, `timezone="Europe/Berlin"`."""
        changes = json_body(BillingSettings(**settings))
        return Call("PATCH", f"/v1/admin/organizations/{org}/billing", Credits, changes)

    @endpoint
    def set_key_budget(self, org: str, key_id: str, monthly_cap: str | None) -> Call[KeyBudget]:
        cap = KeyBudgetUpdate(monthly_cap=monthly_cap).model_dump(mode="json")  # null removes the cap
        return Call("PUT", f"/v1/admin/organizations/{org}/api_keys/{key_id}/budget", KeyBudget, cap)

    @endpoint
    def set_rate_limits(
        self,
        org: str,
        *,
        key_id: str | None = None,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> Call[RateLimitsPublic]:
        limits = RateLimits(requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute)
        path = f"/v1/admin/organizations/{org}" + (f"/api_keys/{key_id}" if key_id else "") + "/rate_limits"
        return Call("PUT", path, RateLimitsPublic, limits.model_dump(mode="json"))

    @endpoint
    def create_pricebook(
        self, body: PricebookCreate, *, idempotency_key: str | None = None
    ) -> Call[Pricebook]:
        return creating("/v1/admin/pricebooks", Pricebook, json_body(body), idempotency_key)

    @endpoint
    def pricebooks(
        self, *, plan: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Call[Page[Pricebook]]:
        params = {"plan": plan, "limit": limit, "after": after}
        return Call("GET", "/v1/admin/pricebooks", Page[Pricebook], params=params)

    @endpoint
    def pricebook(self, pricebook_id: str) -> Call[Pricebook]:
        return Call("GET", f"/v1/admin/pricebooks/{pricebook_id}", Pricebook)

    @endpoint
    def invoice(self, org: str, period: str) -> Call[Invoice]:
        return Call("GET", f"/v1/admin/organizations/{org}/invoices/{period}", Invoice)

    @endpoint
    def finalize_invoices(self) -> Plan[list[str]]:
        """Finalise every ended month not yet finalised; the ids of the invoices it finalised."""
        answer = yield from Call[dict[str, list[str]]](
            "POST", "/v1/admin/invoices/finalize", dict[str, list[str]]
        )
        return answer["finalized"]
