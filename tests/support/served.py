"""A served platform as tests see it: its URL, its operator key, and helpers to make tenants."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from openmaas.bootstrap import Platform


@dataclass
class Tenant:
    org_id: str
    key_id: str
    key: str


@dataclass
class Served:
    url: str
    platform: Platform
    admin_key: str

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_key)

    def tenant(self, name: str, scopes: list[str] | None = None) -> Tenant:
        with self.admin() as admin:
            org = admin.post("/v1/admin/organizations", json={"name": name})
            assert org.status_code == 201, org.text
            body = {"name": "test", **({"scopes": scopes} if scopes else {})}
            key = admin.post(f"/v1/admin/organizations/{org.json()['id']}/api_keys", json=body)
            assert key.status_code == 201, key.text
        return Tenant(org.json()["id"], key.json()["id"], key.json()["key"])


@contextmanager
def serving(platform: Platform) -> Iterator[Served]:
    """`platform` behind a real server on a free port, as tests see it; the platform is closed after."""
    from openmaas.api.app import create_app
    from tests.support.server import running_server

    try:
        assert platform.new_admin_key is not None
        with running_server(create_app(platform)) as url:
            yield Served(url, platform, platform.new_admin_key)
    finally:
        platform.close()
