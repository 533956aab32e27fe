"""SDK resources for organisations, API keys and the audit log:
`client.api_keys.create("ci")`, `client.admin.organizations.create("acme")`."""

from __future__ import annotations

from datetime import datetime

from openmaas.schemas.pages import Page
from openmaas.schemas.tenancy import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    AuditEntry,
    Organization,
    OrganizationCreate,
)
from openmaas.sdk.calls import Call, creating, json_body
from openmaas.sdk.resource import Resource, S, endpoint


class ApiKeys(Resource[S]):
    """A tenant's own keys (`org=None`), or an organisation's keys through the admin routes."""

    def __init__(self, sender: S, org: str | None) -> None:
        super().__init__(sender)
        self._path = f"/v1/admin/organizations/{org}/api_keys" if org else "/v1/api_keys"

    @endpoint
    def create(
        self,
        name: str = "default",
        *,
        scopes: list[str] | None = None,
        expires_at: datetime | None = None,
        expires_in: str | None = None,
        idempotency_key: str | None = None,
    ) -> Call[ApiKeyCreated]:
        key = ApiKeyCreate(name=name, scopes=scopes, expires_at=expires_at, expires_in=expires_in)
        return creating(self._path, ApiKeyCreated, json_body(key), idempotency_key)

    @endpoint
    def list(self, *, limit: int | None = None, after: str | None = None) -> Call[Page[ApiKey]]:
        return Call("GET", self._path, Page[ApiKey], params={"limit": limit, "after": after})

    @endpoint
    def revoke(self, key_id: str) -> Call[ApiKey]:
        return Call("DELETE", f"{self._path}/{key_id}", ApiKey)


class AuditLog(Resource[S]):
    """The tenant's audit log, or (`admin=True`) the platform's, filterable by organisation."""

    def __init__(self, sender: S, admin: bool) -> None:
        super().__init__(sender)
        self._admin = admin

    @endpoint
    def list(
        self,
        *,
        organization_id: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Call[Page[AuditEntry]]:
        params = {"limit": limit, "after": after, "action": action}
        if self._admin:
            params["organization_id"] = organization_id
        path = "/v1/admin/audit_log" if self._admin else "/v1/audit_log"
        return Call("GET", path, Page[AuditEntry], params=params)


class Organizations(Resource[S]):
    @endpoint
    def create(
        self, name: str, *, plan: str = "default", idempotency_key: str | None = None
    ) -> Call[Organization]:
        org = OrganizationCreate(name=name, plan=plan)
        return creating("/v1/admin/organizations", Organization, json_body(org), idempotency_key)

    @endpoint
    def list(self, *, limit: int | None = None, after: str | None = None) -> Call[Page[Organization]]:
        params = {"limit": limit, "after": after}
        return Call("GET", "/v1/admin/organizations", Page[Organization], params=params)

    @endpoint
    def get(self, org: str) -> Call[Organization]:
        """By id or by name."""
        return Call("GET", f"/v1/admin/organizations/{org}", Organization)
