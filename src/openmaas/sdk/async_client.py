"""The asyncio client, with the same resources as `Client`; every method is awaited."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import httpx

from openmaas.schemas import billing
from openmaas.schemas import tenancy as schemas
from openmaas.schemas.pages import Page
from openmaas.sdk import calls
from openmaas.sdk.async_training import AsyncDatasets, AsyncJobs, AsyncRegistry, AsyncTrainingJobs
from openmaas.sdk.calls import Call
from openmaas.sdk.client import DEFAULT_URL
from openmaas.sdk.deployments import AsyncDeployments
from openmaas.sdk.errors import APIConnectionError
from openmaas.sdk.optimizations import AsyncOptimizations

T = TypeVar("T")


class AsyncClient:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self.api_keys = AsyncApiKeys(self, org=None)
        self.audit_log = AsyncAuditLog(self, admin=False)
        self.admin = AsyncAdmin(self)
        self.invoices = AsyncInvoices(self)
        self.marketplace = AsyncMarketplace(self)
        self.datasets = AsyncDatasets(self)
        self.jobs = AsyncJobs(self)
        self.training_jobs = AsyncTrainingJobs(self)
        self.registry = AsyncRegistry(self)
        self.deployments = AsyncDeployments(self)
        self.optimizations = AsyncOptimizations(self)

    async def send(self, call: Call[T]) -> T:
        try:
            response = await self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Cannot reach {self._http.base_url}: {exc}") from exc
        return call.parse(response)

    async def me(self) -> schemas.Caller:
        return await self.send(calls.me())

    async def usage(
        self,
        *,
        group_by: list[str] | None = None,
        granularity: str = "bucket",
        start: datetime | None = None,
        end: datetime | None = None,
        model: str | None = None,
        api_key_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> billing.UsageReport:
        return await self.send(
            calls.get_usage(group_by, granularity, start, end, model, api_key_id, limit, after)
        )

    async def credits(self) -> billing.Credits:
        return await self.send(calls.get_credits(None))

    async def credit_transactions(
        self, *, limit: int | None = None, after: str | None = None
    ) -> Page[billing.CreditTransaction]:
        return await self.send(calls.list_credit_transactions(limit, after))

    async def models(self) -> dict[str, Any]:
        return await self.send(calls.list_models())

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


class AsyncApiKeys:
    def __init__(self, client: AsyncClient, org: str | None) -> None:
        self._client = client
        self._org = org

    async def create(
        self,
        name: str = "default",
        *,
        scopes: list[str] | None = None,
        expires_at: datetime | None = None,
        expires_in: str | None = None,
        idempotency_key: str | None = None,
    ) -> schemas.ApiKeyCreated:
        call = calls.create_key(self._org, name, scopes, expires_at, expires_in, idempotency_key)
        return await self._client.send(call)

    async def list(self, *, limit: int | None = None, after: str | None = None) -> Page[schemas.ApiKey]:
        return await self._client.send(calls.list_keys(self._org, limit, after))

    async def revoke(self, key_id: str) -> schemas.ApiKey:
        return await self._client.send(calls.revoke_key(self._org, key_id))


class AsyncAuditLog:
    def __init__(self, client: AsyncClient, admin: bool) -> None:
        self._client = client
        self._admin = admin

    async def list(
        self,
        *,
        organization_id: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Page[schemas.AuditEntry]:
        return await self._client.send(calls.list_audit(self._admin, organization_id, action, limit, after))


class AsyncOrganizations:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self, name: str, *, plan: str = "default", idempotency_key: str | None = None
    ) -> schemas.Organization:
        return await self._client.send(calls.create_organization(name, plan, idempotency_key))

    async def list(self, *, limit: int | None = None, after: str | None = None) -> Page[schemas.Organization]:
        return await self._client.send(calls.list_organizations(limit, after))

    async def get(self, org: str) -> schemas.Organization:
        return await self._client.send(calls.get_organization(org))


class AsyncAdmin:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self.organizations = AsyncOrganizations(client)
        self.audit_log = AsyncAuditLog(client, admin=True)
        self.billing = AsyncAdminBilling(client)

    def api_keys(self, org: str) -> AsyncApiKeys:
        return AsyncApiKeys(self._client, org=org)


class AsyncInvoices:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> billing.InvoiceList:
        """Every month since the organization was created, newest first (the current one a draft)."""
        return await self._client.send(calls.list_invoices())

    async def get(self, period: str) -> billing.Invoice:
        """The invoice for `period` (`YYYY-MM`); `billing.export.to_csv(invoice)` gives its CSV."""
        return await self._client.send(calls.get_invoice(None, period))


class AsyncMarketplace:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def catalogue(self, *, limit: int | None = None, after: str | None = None) -> Page[billing.Listing]:
        return await self._client.send(calls.marketplace_catalogue(limit, after))

    async def listings(self, *, limit: int | None = None, after: str | None = None) -> Page[billing.Listing]:
        """This organization's own listings, withdrawn ones included."""
        return await self._client.send(calls.my_listings(limit, after))

    async def publish(
        self,
        model: str,
        components: list[dict[str, Any]],
        *,
        description: str = "",
        idempotency_key: str | None = None,
    ) -> billing.Listing:
        body = billing.ListingCreate(
            model=model,
            description=description,
            components=[billing.PriceComponentIn(**c) for c in components],
        )
        return await self._client.send(calls.publish_listing(body, idempotency_key))

    async def withdraw(self, listing_id: str) -> billing.Listing:
        return await self._client.send(calls.withdraw_listing(listing_id))


class AsyncAdminBilling:
    """Operator billing calls: credits, budgets, limits, pricebooks and month-end finalisation."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def add_credits(
        self, org: str, amount: str, *, note: str | None = None, idempotency_key: str | None = None
    ) -> billing.CreditTransaction:
        return await self._client.send(calls.add_credits(org, amount, note, idempotency_key))

    async def credits(self, org: str) -> billing.Credits:
        return await self._client.send(calls.get_credits(org))

    async def update(self, org: str, **settings: Any) -> billing.Credits:
        """`prepaid=`, `monthly_cap="100.00"`, `clear_monthly_cap=True`, `timezone="Europe/Berlin"`."""
        return await self._client.send(calls.update_billing(org, billing.BillingSettings(**settings)))

    async def set_key_budget(self, org: str, key_id: str, monthly_cap: str | None) -> billing.KeyBudget:
        return await self._client.send(calls.set_key_budget(org, key_id, monthly_cap))

    async def set_rate_limits(
        self,
        org: str,
        *,
        key_id: str | None = None,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> billing.RateLimitsPublic:
        limits = billing.RateLimits(
            requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute
        )
        return await self._client.send(calls.set_rate_limits(org, key_id, limits))

    async def create_pricebook(
        self, body: billing.PricebookCreate, *, idempotency_key: str | None = None
    ) -> billing.Pricebook:
        return await self._client.send(calls.create_pricebook(body, idempotency_key))

    async def pricebooks(
        self, *, plan: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Page[billing.Pricebook]:
        return await self._client.send(calls.list_pricebooks(plan, limit, after))

    async def pricebook(self, pricebook_id: str) -> billing.Pricebook:
        return await self._client.send(calls.get_pricebook(pricebook_id))

    async def invoice(self, org: str, period: str) -> billing.Invoice:
        return await self._client.send(calls.get_invoice(org, period))

    async def finalize_invoices(self) -> list[str]:
        return (await self._client.send(calls.finalize_invoices()))["finalized"]
