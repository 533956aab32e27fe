"""The asyncio client, with the same resources as `Client`; every method is awaited."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import httpx

from openmaas.pagination import Page
from openmaas.sdk import calls
from openmaas.sdk.async_training import AsyncDatasets, AsyncJobs, AsyncRegistry, AsyncTrainingJobs
from openmaas.sdk.calls import Call
from openmaas.sdk.client import DEFAULT_URL
from openmaas.sdk.deployments import AsyncDeployments
from openmaas.sdk.errors import APIConnectionError
from openmaas.tenancy import schemas

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
        self.datasets = AsyncDatasets(self)
        self.jobs = AsyncJobs(self)
        self.training_jobs = AsyncTrainingJobs(self)
        self.registry = AsyncRegistry(self)
        self.deployments = AsyncDeployments(self)

    async def send(self, call: Call[T]) -> T:
        try:
            response = await self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Cannot reach {self._http.base_url}: {exc}") from exc
        return call.parse(response)

    async def me(self) -> schemas.Caller:
        return await self.send(calls.me())

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

    def api_keys(self, org: str) -> AsyncApiKeys:
        return AsyncApiKeys(self._client, org=org)
