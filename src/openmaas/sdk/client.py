"""The synchronous client: `Client(base_url, api_key).admin.organizations.create("acme")`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from openmaas.pagination import Page
from openmaas.sdk import calls
from openmaas.sdk.calls import Call
from openmaas.sdk.deployments import Deployments
from openmaas.sdk.errors import APIConnectionError, error_for
from openmaas.sdk.training import Datasets, Jobs, Registry, TrainingJobs
from openmaas.sdk.uploads import Progress, file_chunks, zipped_folder
from openmaas.tenancy import schemas

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
        self.datasets = Datasets(self)
        self.jobs = Jobs(self)
        self.training_jobs = TrainingJobs(self)
        self.registry = Registry(self)
        self.deployments = Deployments(self)

    def send(self, call: Call[T]) -> T:
        try:
            response = self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Cannot reach {self._http.base_url}: {exc}") from exc
        return call.parse(response)

    def me(self) -> schemas.Caller:
        return self.send(calls.me())

    def models(self) -> dict[str, Any]:
        return self.send(calls.list_models())

    def import_model(
        self, folder: str | Path, name: str, *, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Upload a Hugging Face model folder (zipped on the way) as a new version of model `name`."""
        with zipped_folder(Path(folder)) as archive:
            try:
                response = self._http.post(
                    "/v1/registry/imports",
                    params={"name": name},
                    content=file_chunks(archive, progress),
                    headers={"Content-Type": "application/zip"},
                    timeout=None,
                )
            except httpx.TransportError as exc:
                raise APIConnectionError(f"Cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise error_for(response)
        result: dict[str, Any] = response.json()
        return result

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

    def api_keys(self, org: str) -> ApiKeys:
        """The keys of organisation `org` (id or name)."""
        return ApiKeys(self._client, org=org)
