"""Integration fixtures: a migrated platform on a real database, served by a real server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from openmaas.api.app import create_app
from openmaas.bootstrap import Platform
from tests.support.platforms import make_platform
from tests.support.server import running_server


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


@pytest.fixture
def platform(tmp_path: Path, database_url: str) -> Iterator[Platform]:
    platform = make_platform(tmp_path / "home", database_url, max_body_bytes=64 * 1024)
    yield platform
    platform.close()


@pytest.fixture
def served(platform: Platform) -> Iterator[Served]:
    assert platform.new_admin_key is not None
    with running_server(create_app(platform)) as url:
        yield Served(url, platform, platform.new_admin_key)
