"""Cluster mode's API servers: two `openmaas serve --no-worker` processes on one PostgreSQL database
share a key's rate limit and an organisation's monthly cap. Requests alternate between the two
servers, as a load balancer sends them: the limit holds in total, not per server.

PostgreSQL only (OPENMAAS_TEST_POSTGRES_URL); skipped without it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from openmaas.api.app import create_app
from openmaas.bootstrap import Platform
from openmaas.ids import new_id
from openmaas.metering.tables import UsageRecord
from openmaas.registry import service as registry
from openmaas.registry.manifest import read_manifest
from tests.integration.billing.helpers import make_pricebook
from tests.integration.jobs.harness import wait_for
from tests.integration.serving.predict_support import artifact
from tests.support.databases import POSTGRES_URL
from tests.support.platforms import make_platform, migrated_postgres_database
from tests.support.serve_process import ServeProcess
from tests.support.server import running_server

pytestmark = pytest.mark.skipif(POSTGRES_URL is None, reason="needs OPENMAAS_TEST_POSTGRES_URL")

ROW = {"age": 40.0, "plan": "pro", "noise": 0.1}
KEY_LIMIT = 6  # requests per minute of one key
CAP_REQUESTS = 4  # the organisation's monthly cap buys this many requests


Tenant = tuple[str, str, str]  # org id, key id, key
Cluster = tuple[Platform, list[ServeProcess], Tenant, Tenant]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Platform, list[ServeProcess], Tenant, Tenant]]:
    """The platform (for setting up), two tenants with a deployed model `churn`, and two API
    servers on its database and artifact folder, started after the deployments were made (so
    that both serve them from their first request; tests/integration/serving/test_deployment_sync.py
    covers a deployment made while the servers run)."""
    assert POSTGRES_URL is not None
    home = tmp_path_factory.mktemp("cluster") / "home"
    with migrated_postgres_database(POSTGRES_URL) as url:
        platform = make_platform(home, url, rate_limiter="database", billing_scheduler_interval_s=0)
        with running_server(create_app(platform)) as setup:
            limited, capped = (_tenant(platform, setup, name) for name in ("limited", "capped"))
        env = {
            "OPENMAAS_RATE_LIMITER": "database",
            "OPENMAAS_BILLING_CACHE_TTL_S": "0.01",  # prices set by the test apply at once
            "OPENMAAS_WORKER_IN_PROCESS": "true",  # overridden by --no-worker
        }
        servers = [
            ServeProcess(platform.settings, home.parent / f"serve-{i}.log", env, args=("--no-worker",))
            for i in range(2)
        ]
        try:
            # Both start at once: each spends seconds on imports, which the other need not wait for.
            for server in servers:
                server.launch()
            deadline = time.monotonic() + 120
            for server in servers:
                server.wait_ready(deadline)
                assert "no job worker here" in server.log.read_text()
            for server in servers:  # each loads its replicas; no limit or price applies yet
                for _, _, key in (limited, capped):
                    with httpx.Client(base_url=server.url, headers=_bearer(key), timeout=60) as api:
                        wait_for(lambda api=api: _predict(api).status_code == 200, timeout=90, every=0.2)  # type: ignore[misc]
            yield platform, servers, limited, capped
        finally:
            for server in servers:
                server.stop()
            platform.close()


def _tenant(platform: Platform, url: str, name: str) -> Tenant:
    """An organisation with a key and a deployed tabular model `churn`."""
    with httpx.Client(base_url=url, headers=_bearer(platform.new_admin_key)) as admin:
        org = admin.post("/v1/admin/organizations", json={"name": name}).json()["id"]
        key = admin.post(f"/v1/admin/organizations/{org}/api_keys", json={"name": "app"}).json()
    folder = artifact("tabular-classification")
    version_id = new_id("mv_")
    relative = platform.store.model_dir(org, version_id)
    shutil.copytree(folder, platform.store.path(relative))  # type: ignore[attr-defined]
    with platform.db.session() as session:
        registry.register_version(
            session,
            version_id=version_id,
            org_id=org,
            model_name="churn",
            artifact_path=relative,
            manifest=read_manifest(folder),
            lineage={},
            now=platform.clock.now(),
        )
    with httpx.Client(base_url=url, headers=_bearer(key["key"]), timeout=60) as api:
        created = api.post("/v1/deployments", json={"model": "churn:1", "name": "churn", "max_wait_ms": 0})
        assert created.status_code in (200, 201, 202), created.text
    return org, key["id"], key["key"]


def _predict(api: httpx.Client) -> httpx.Response:
    return api.post("/v1/deployments/churn/predict", json={"inputs": [ROW]})


def _bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _alternating(servers: list[ServeProcess], key: str, count: int) -> list[int]:
    """`count` predictions, sent to each server in turn; their status codes."""
    clients = [
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        for server in servers
    ]
    try:
        return [_predict(clients[i % 2]).status_code for i in range(count)]
    finally:
        for client in clients:
            client.close()


def test_a_keys_rate_limit_holds_across_both_servers(cluster: Cluster) -> None:
    platform, servers, (org, key_id, key), _ = cluster
    with httpx.Client(base_url=servers[1].url, headers=_bearer(platform.new_admin_key)) as admin:
        limited = admin.put(
            f"/v1/admin/organizations/{org}/api_keys/{key_id}/rate_limits",
            json={"requests_per_minute": KEY_LIMIT},
        )
        assert limited.status_code == 200, limited.text
    codes = _alternating(servers, key, 3 * KEY_LIMIT)
    assert set(codes) <= {200, 429}, codes
    # Per server it would be 2 x KEY_LIMIT; a slice one server holds unused may refuse a few more.
    assert 0 < codes.count(200) <= KEY_LIMIT, codes
    assert codes.count(429) >= 2 * KEY_LIMIT
    assert {codes[i] for i in range(0, len(codes), 2)} & {200} and {
        codes[i] for i in range(1, len(codes), 2)
    } & {200}


def test_an_organisations_monthly_cap_holds_across_both_servers(cluster: Cluster) -> None:
    platform, servers, _, (org, _, key) = cluster
    make_pricebook(platform, [{"unit": "requests", "price": "0.01"}])
    with httpx.Client(base_url=servers[1].url, headers=_bearer(platform.new_admin_key)) as admin:
        capped = admin.patch(
            f"/v1/admin/organizations/{org}/billing", json={"monthly_cap": f"{CAP_REQUESTS / 100:.2f}"}
        )
        assert capped.status_code == 200, capped.text
    codes = _alternating(servers, key, 4 * CAP_REQUESTS)
    served = codes.count(200)
    assert 0 < served <= CAP_REQUESTS, codes
    assert set(codes) - {200} and all(code in (402, 429) for code in codes if code != 200), codes
    with platform.db.read_session() as session:
        spent = session.scalar(
            select(func.coalesce(func.sum(UsageRecord.cost_micros), 0)).where(UsageRecord.org_id == org)
        )
    assert spent == served * 10_000 <= CAP_REQUESTS * 10_000  # billed exactly what was served
