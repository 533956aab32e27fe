"""The synchronous client: `Client(base_url, api_key).admin.organizations.create("acme")`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from openmaas.schemas import billing
from openmaas.schemas import tenancy as schemas
from openmaas.schemas.pages import Page
from openmaas.sdk import calls
from openmaas.sdk.calls import Call
from openmaas.sdk.deployments import Deployments
from openmaas.sdk.errors import APIConnectionError, error_for
from openmaas.sdk.optimizations import Optimizations
from openmaas.sdk.training import Datasets, Jobs, Registry, TrainingJobs
from openmaas.sdk.uploads import Progress, file_chunks, zipped_folder

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.api_keys = ApiKeys(self, org=None)
        self.audit_log = AuditLog(self, admin=False)
        self.admin = Admin(self)
        self.invoices = Invoices(self)
        self.marketplace = Marketplace(self)
        self.datasets = Datasets(self)
        self.jobs = Jobs(self)
        self.training_jobs = TrainingJobs(self)
        self.registry = Registry(self)
        self.deployments = Deployments(self)
        self.optimizations = Optimizations(self)

    def send(self, call: Call[T]) -> T:
        try:
            response = self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Cannot reach {self._http.base_url}: {exc}") from exc
        return call.parse(response)

    def me(self) -> schemas.Caller:
        return self.send(calls.me())

    def usage(
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
        """Usage summed by `group_by` (day, model, deployment, api_key_id, unit), or single events."""
        return self.send(calls.get_usage(group_by, granularity, start, end, model, api_key_id, limit, after))

    def credits(self) -> billing.Credits:
        return self.send(calls.get_credits(None))

    def credit_transactions(
        self, *, limit: int | None = None, after: str | None = None
    ) -> Page[billing.CreditTransaction]:
        return self.send(calls.list_credit_transactions(limit, after))

    def models(self) -> dict[str, Any]:
        return self.send(calls.list_models())

    def import_model(
        self, folder: str | Path, name: str, *, progress: Progress | None = None, task: str | None = None
    ) -> dict[str, Any]:
        """Upload a Hugging Face model folder (zipped on the way), or a `.onnx` file, as a new
        version of model `name`."""
        path = Path(folder)
        if path.is_file() and path.suffix.lower() == ".onnx":
            params = {"name": name, "format": "onnx", **({"task": task} if task else {})}
            response = self._upload(path, params, "application/octet-stream", progress)
        else:
            with zipped_folder(path) as archive:
                response = self._upload(archive, {"name": name}, "application/zip", progress)
        if response.status_code >= 400:
            raise error_for(response)
        result: dict[str, Any] = response.json()
        return result

    def _upload(
        self, file: Path, params: dict[str, str], content_type: str, progress: Progress | None
    ) -> httpx.Response:
        try:
            return self._http.post(
                "/v1/registry/imports",
                params=params,
                content=file_chunks(file, progress),
                headers={"Content-Type": content_type},
                timeout=None,
            )
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Cannot reach {self._http.base_url}: {exc}") from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def iterate(fetch: Any, limit: int | None = None) -> Iterator[Any]:
    """Every item of a paginated list, page after page."""
    after: str | None = None
    while True:
        page: Page[Any] = fetch(limit=limit, after=after)
        yield from page.data
        if not page.has_more:
            return
        after = page.last_id


class ApiKeys:
    """A tenant's own keys (`org=None`), or an organisation's keys through the admin routes."""

    def __init__(self, client: Client, org: str | None) -> None:
        self._client = client
        self._org = org

    def create(
        self,
        name: str = "default",
        *,
        scopes: list[str] | None = None,
        expires_at: datetime | None = None,
        expires_in: str | None = None,
        idempotency_key: str | None = None,
    ) -> schemas.ApiKeyCreated:
        return self._client.send(
            calls.create_key(self._org, name, scopes, expires_at, expires_in, idempotency_key)
        )

    def list(self, *, limit: int | None = None, after: str | None = None) -> Page[schemas.ApiKey]:
        return self._client.send(calls.list_keys(self._org, limit, after))

    def revoke(self, key_id: str) -> schemas.ApiKey:
        return self._client.send(calls.revoke_key(self._org, key_id))


class AuditLog:
    def __init__(self, client: Client, admin: bool) -> None:
        self._client = client
        self._admin = admin

    def list(
        self,
        *,
        organization_id: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Page[schemas.AuditEntry]:
        return self._client.send(calls.list_audit(self._admin, organization_id, action, limit, after))


class Organizations:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self, name: str, *, plan: str = "default", idempotency_key: str | None = None
    ) -> schemas.Organization:
        return self._client.send(calls.create_organization(name, plan, idempotency_key))

    def list(self, *, limit: int | None = None, after: str | None = None) -> Page[schemas.Organization]:
        return self._client.send(calls.list_organizations(limit, after))

    def get(self, org: str) -> schemas.Organization:
        """By id or by name."""
        return self._client.send(calls.get_organization(org))


class Admin:
    """Operator calls; the client's key must hold the `operator` scope."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.organizations = Organizations(client)
        self.audit_log = AuditLog(client, admin=True)
        self.billing = AdminBilling(client)

    def api_keys(self, org: str) -> ApiKeys:
        """The keys of organisation `org` (id or name)."""
        return ApiKeys(self._client, org=org)


class Invoices:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> billing.InvoiceList:
        """Every month since the organization was created, newest first (the current one a draft)."""
        return self._client.send(calls.list_invoices())

    def get(self, period: str) -> billing.Invoice:
        """The invoice for `period` (`YYYY-MM`); `billing.export.to_csv(invoice)` gives its CSV."""
        return self._client.send(calls.get_invoice(None, period))


class Marketplace:
    def __init__(self, client: Client) -> None:
        self._client = client

    def catalogue(self, *, limit: int | None = None, after: str | None = None) -> Page[billing.Listing]:
        return self._client.send(calls.marketplace_catalogue(limit, after))

    def listings(self, *, limit: int | None = None, after: str | None = None) -> Page[billing.Listing]:
        """This organization's own listings, withdrawn ones included."""
        return self._client.send(calls.my_listings(limit, after))

    def publish(
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
        return self._client.send(calls.publish_listing(body, idempotency_key))

    def withdraw(self, listing_id: str) -> billing.Listing:
        return self._client.send(calls.withdraw_listing(listing_id))


class AdminBilling:
    """Operator billing calls: credits, budgets, limits, pricebooks and month-end finalisation."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def add_credits(
        self, org: str, amount: str, *, note: str | None = None, idempotency_key: str | None = None
    ) -> billing.CreditTransaction:
        return self._client.send(calls.add_credits(org, amount, note, idempotency_key))

    def credits(self, org: str) -> billing.Credits:
        return self._client.send(calls.get_credits(org))

    def update(self, org: str, **settings: Any) -> billing.Credits:
        """`prepaid=`, `monthly_cap="100.00"`, `clear_monthly_cap=True`, `timezone="Europe/Berlin"`."""
        return self._client.send(calls.update_billing(org, billing.BillingSettings(**settings)))

    def set_key_budget(self, org: str, key_id: str, monthly_cap: str | None) -> billing.KeyBudget:
        return self._client.send(calls.set_key_budget(org, key_id, monthly_cap))

    def set_rate_limits(
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
        return self._client.send(calls.set_rate_limits(org, key_id, limits))

    def create_pricebook(
        self, body: billing.PricebookCreate, *, idempotency_key: str | None = None
    ) -> billing.Pricebook:
        return self._client.send(calls.create_pricebook(body, idempotency_key))

    def pricebooks(
        self, *, plan: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Page[billing.Pricebook]:
        return self._client.send(calls.list_pricebooks(plan, limit, after))

    def pricebook(self, pricebook_id: str) -> billing.Pricebook:
        return self._client.send(calls.get_pricebook(pricebook_id))

    def invoice(self, org: str, period: str) -> billing.Invoice:
        return self._client.send(calls.get_invoice(org, period))

    def finalize_invoices(self) -> list[str]:
        return self._client.send(calls.finalize_invoices())["finalized"]
