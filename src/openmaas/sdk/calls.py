"""What each SDK method sends and what it gets back, described once for both clients.

A `Call` is plain data; `Client` and `AsyncClient` only differ in how they send it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from openmaas.schemas import billing
from openmaas.schemas import tenancy as schemas
from openmaas.schemas.pages import Page
from openmaas.schemas.serving import DeploymentEventPublic, DeploymentPublic, PredictionsPublic
from openmaas.sdk.errors import error_for

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    result: Any  # the type T to parse the JSON into
    json: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        headers = {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else None
        params = {k: v for k, v in self.params.items() if v is not None}
        return client.build_request(self.method, self.path, json=self.json, params=params, headers=headers)

    def parse(self, response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise error_for(response)
        adapter: TypeAdapter[T] = TypeAdapter(self.result)
        return adapter.validate_json(response.content)


def _page(limit: int | None, after: str | None) -> dict[str, Any]:
    return {"limit": limit, "after": after}


def _body(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def me() -> Call[schemas.Caller]:
    return Call("GET", "/v1/me", schemas.Caller)


def create_organization(name: str, plan: str, idempotency_key: str | None) -> Call[schemas.Organization]:
    body = _body(schemas.OrganizationCreate(name=name, plan=plan))
    return Call(
        "POST", "/v1/admin/organizations", schemas.Organization, body, idempotency_key=idempotency_key
    )


def list_organizations(limit: int | None, after: str | None) -> Call[Page[schemas.Organization]]:
    return Call("GET", "/v1/admin/organizations", Page[schemas.Organization], params=_page(limit, after))


def get_organization(org: str) -> Call[schemas.Organization]:
    return Call("GET", f"/v1/admin/organizations/{org}", schemas.Organization)


def _key_body(
    name: str, scopes: list[str] | None, expires_at: datetime | None, expires_in: str | None
) -> dict[str, Any]:
    return _body(schemas.ApiKeyCreate(name=name, scopes=scopes, expires_at=expires_at, expires_in=expires_in))


def create_key(
    org: str | None,
    name: str,
    scopes: list[str] | None,
    expires_at: datetime | None,
    expires_in: str | None,
    idempotency_key: str | None,
) -> Call[schemas.ApiKeyCreated]:
    path = f"/v1/admin/organizations/{org}/api_keys" if org else "/v1/api_keys"
    body = _key_body(name, scopes, expires_at, expires_in)
    return Call("POST", path, schemas.ApiKeyCreated, body, idempotency_key=idempotency_key)


def list_keys(org: str | None, limit: int | None, after: str | None) -> Call[Page[schemas.ApiKey]]:
    path = f"/v1/admin/organizations/{org}/api_keys" if org else "/v1/api_keys"
    return Call("GET", path, Page[schemas.ApiKey], params=_page(limit, after))


def revoke_key(org: str | None, key_id: str) -> Call[schemas.ApiKey]:
    path = f"/v1/admin/organizations/{org}/api_keys/{key_id}" if org else f"/v1/api_keys/{key_id}"
    return Call("DELETE", path, schemas.ApiKey)


def list_audit(
    admin: bool, organization_id: str | None, action: str | None, limit: int | None, after: str | None
) -> Call[Page[schemas.AuditEntry]]:
    params = {**_page(limit, after), "action": action}
    if admin:
        params["organization_id"] = organization_id
    path = "/v1/admin/audit_log" if admin else "/v1/audit_log"
    return Call("GET", path, Page[schemas.AuditEntry], params=params)


def list_models() -> Call[dict[str, Any]]:
    return Call("GET", "/v1/models", dict[str, Any])


def create_deployment(body: dict[str, Any], idempotency_key: str | None) -> Call[DeploymentPublic]:
    return Call("POST", "/v1/deployments", DeploymentPublic, body, idempotency_key=idempotency_key)


def list_deployments(limit: int | None, after: str | None) -> Call[Page[DeploymentPublic]]:
    return Call("GET", "/v1/deployments", Page[DeploymentPublic], params=_page(limit, after))


def get_deployment(name: str) -> Call[DeploymentPublic]:
    return Call("GET", f"/v1/deployments/{name}", DeploymentPublic)


def deployment_events(name: str, limit: int | None, after: str | None) -> Call[Page[DeploymentEventPublic]]:
    return Call(
        "GET", f"/v1/deployments/{name}/events", Page[DeploymentEventPublic], params=_page(limit, after)
    )


def update_deployment(name: str, body: dict[str, Any]) -> Call[DeploymentPublic]:
    return Call("PATCH", f"/v1/deployments/{name}", DeploymentPublic, body)


def predict(
    name: str, inputs: list[Any], top_k: int | None, timeout: float | None
) -> Call[PredictionsPublic]:
    body: dict[str, Any] = {"inputs": inputs}
    if top_k is not None:
        body["top_k"] = top_k
    if timeout is not None:
        body["timeout"] = timeout
    return Call("POST", f"/v1/deployments/{name}/predict", PredictionsPublic, body)


def stop_deployment(name: str) -> Call[DeploymentPublic]:
    return Call("POST", f"/v1/deployments/{name}/stop", DeploymentPublic)


def delete_deployment(name: str) -> Call[DeploymentPublic]:
    return Call("DELETE", f"/v1/deployments/{name}", DeploymentPublic)


# --- usage, credits, invoices, pricebooks and the marketplace -------------------------------


def get_usage(
    group_by: list[str] | None,
    granularity: str,
    start: datetime | None,
    end: datetime | None,
    model: str | None,
    api_key_id: str | None,
    limit: int | None,
    after: str | None,
) -> Call[billing.UsageReport]:
    params: dict[str, Any] = {
        **_page(limit, after),
        "group_by": ",".join(group_by) if group_by else None,
        "granularity": granularity,
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "model": model,
        "api_key_id": api_key_id,
    }
    return Call("GET", "/v1/usage", billing.UsageReport, params=params)


def get_credits(org: str | None) -> Call[billing.Credits]:
    path = f"/v1/admin/organizations/{org}/credits" if org else "/v1/credits"
    return Call("GET", path, billing.Credits)


def list_credit_transactions(limit: int | None, after: str | None) -> Call[Page[billing.CreditTransaction]]:
    return Call(
        "GET", "/v1/credits/transactions", Page[billing.CreditTransaction], params=_page(limit, after)
    )


def add_credits(
    org: str, amount: str, note: str | None, idempotency_key: str | None
) -> Call[billing.CreditTransaction]:
    body = _body(billing.CreditTopUp(amount=amount, note=note))
    path = f"/v1/admin/organizations/{org}/credits"
    return Call("POST", path, billing.CreditTransaction, body, idempotency_key=idempotency_key)


def update_billing(org: str, settings: billing.BillingSettings) -> Call[billing.Credits]:
    return Call("PATCH", f"/v1/admin/organizations/{org}/billing", billing.Credits, _body(settings))


def set_key_budget(org: str, key_id: str, monthly_cap: str | None) -> Call[billing.KeyBudget]:
    body = billing.KeyBudgetUpdate(monthly_cap=monthly_cap).model_dump(mode="json")
    return Call("PUT", f"/v1/admin/organizations/{org}/api_keys/{key_id}/budget", billing.KeyBudget, body)


def set_rate_limits(
    org: str, key_id: str | None, limits: billing.RateLimits
) -> Call[billing.RateLimitsPublic]:
    path = f"/v1/admin/organizations/{org}" + (f"/api_keys/{key_id}" if key_id else "") + "/rate_limits"
    return Call("PUT", path, billing.RateLimitsPublic, limits.model_dump(mode="json"))


def create_pricebook(body: billing.PricebookCreate, idempotency_key: str | None) -> Call[billing.Pricebook]:
    return Call(
        "POST", "/v1/admin/pricebooks", billing.Pricebook, _body(body), idempotency_key=idempotency_key
    )


def list_pricebooks(plan: str | None, limit: int | None, after: str | None) -> Call[Page[billing.Pricebook]]:
    return Call(
        "GET", "/v1/admin/pricebooks", Page[billing.Pricebook], params={**_page(limit, after), "plan": plan}
    )


def get_pricebook(pricebook_id: str) -> Call[billing.Pricebook]:
    return Call("GET", f"/v1/admin/pricebooks/{pricebook_id}", billing.Pricebook)


def finalize_invoices() -> Call[dict[str, list[str]]]:
    return Call("POST", "/v1/admin/invoices/finalize", dict[str, list[str]])


def list_invoices() -> Call[billing.InvoiceList]:
    return Call("GET", "/v1/invoices", billing.InvoiceList)


def get_invoice(org: str | None, period: str) -> Call[billing.Invoice]:
    path = f"/v1/admin/organizations/{org}/invoices/{period}" if org else f"/v1/invoices/{period}"
    return Call("GET", path, billing.Invoice)


def marketplace_catalogue(limit: int | None, after: str | None) -> Call[Page[billing.Listing]]:
    return Call("GET", "/v1/marketplace", Page[billing.Listing], params=_page(limit, after))


def my_listings(limit: int | None, after: str | None) -> Call[Page[billing.Listing]]:
    return Call("GET", "/v1/marketplace/listings", Page[billing.Listing], params=_page(limit, after))


def publish_listing(body: billing.ListingCreate, idempotency_key: str | None) -> Call[billing.Listing]:
    return Call(
        "POST", "/v1/marketplace/listings", billing.Listing, _body(body), idempotency_key=idempotency_key
    )


def withdraw_listing(listing_id: str) -> Call[billing.Listing]:
    return Call("DELETE", f"/v1/marketplace/listings/{listing_id}", billing.Listing)
