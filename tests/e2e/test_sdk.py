"""The Python SDK, sync and async, against a real server: typed results and typed errors."""

from __future__ import annotations

import asyncio

import pytest

from openmaas import AsyncClient, Client
from openmaas.schemas import tenancy as schemas
from openmaas.sdk import AuthenticationError, ConflictError, NotFoundError, PermissionDeniedError
from openmaas.sdk.client import iterate
from tests.support.served import Served


def test_sync_client_round_trip(served: Served) -> None:
    with Client(served.url, served.admin_key) as admin:
        org = admin.admin.organizations.create("acme", idempotency_key="acme-once")
        assert isinstance(org, schemas.Organization)
        assert admin.admin.organizations.create("acme", idempotency_key="acme-once").id == org.id
        assert admin.admin.organizations.get("acme").id == org.id
        key = admin.admin.api_keys(org.id).create("app", scopes=["api_keys:write"])
        assert isinstance(key, schemas.ApiKeyCreated) and key.key.startswith("om-")
        with pytest.raises(ConflictError) as conflict:
            admin.admin.organizations.create("acme")
        assert conflict.value.param == "name" and conflict.value.status_code == 409
    with Client(served.url, key.key) as tenant:
        me = tenant.me()
        assert me.organization is not None and me.organization.name == "acme"
        for i in range(5):
            tenant.api_keys.create(f"k{i}")
        names = [k.name for k in iterate(tenant.api_keys.list, limit=2)]
        assert sorted(names) == ["app", "k0", "k1", "k2", "k3", "k4"]
        with pytest.raises(PermissionDeniedError):
            tenant.audit_log.list()
        with pytest.raises(NotFoundError):
            tenant.api_keys.revoke("key_doesnotexist")


def test_async_client_round_trip(served: Served) -> None:
    async def scenario() -> None:
        async with AsyncClient(served.url, served.admin_key) as admin:
            org = await admin.admin.organizations.create("globex")
            key = await admin.admin.api_keys("globex").create("ops")
            entries = await admin.admin.audit_log.list(organization_id=org.id)
            assert [e.action for e in entries.data] == ["organizations.api_keys.create"]
        async with AsyncClient(served.url, key.key) as tenant:
            created = await asyncio.gather(*(tenant.api_keys.create(f"k{i}") for i in range(4)))
            assert len({c.id for c in created}) == 4
            page = await tenant.api_keys.list(limit=3)
            assert page.has_more and len(page.data) == 3
            revoked = await tenant.api_keys.revoke(created[0].id)
            assert revoked.revoked_at is not None
        async with AsyncClient(served.url, created[0].key) as gone:
            with pytest.raises(AuthenticationError) as denied:
                await gone.me()
            assert denied.value.code == "invalid_api_key" and denied.value.request_id

    asyncio.run(scenario())
