"""Two API servers on one database (cluster mode): a deployment created, updated or deleted through
one is served, rolled or gone on the other within seconds, without a restart; meanwhile the other
answers 503 `model_loading` (with Retry-After), never 404 for a model that exists."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from openmaas.api.app import create_app
from openmaas.bootstrap import Platform, build_platform
from tests.integration.jobs.harness import wait_for
from tests.integration.serving.predict_support import artifact, register
from tests.support.served import Served
from tests.support.server import running_server

ROW = {"age": 40.0, "plan": "pro", "noise": 0.1}


@pytest.fixture
def other(platform: Platform) -> Iterator[Served]:
    """A second API server: the same database, artifact store and secret as `served`'s."""
    second = build_platform(platform.settings)
    with running_server(create_app(second)) as url:
        yield Served(url, second, "")
    second.close()


def _predict(http: httpx.Client) -> httpx.Response:
    return http.post("/v1/deployments/api/predict", json={"inputs": [ROW]})


def _answered_by(http: httpx.Client, version: str) -> bool:
    response = _predict(http)
    assert response.status_code in (200, 503), response.text  # never a 404 while it exists
    if response.status_code == 503:
        assert response.json()["error"]["code"] == "model_loading" and "retry-after" in response.headers
    return response.status_code == 200 and response.json()["model"] == version


def test_a_deployment_made_on_one_server_is_served_rolled_and_removed_on_the_other(
    served: Served, other: Served
) -> None:
    tenant = served.tenant("acme")
    v1 = register(served, tenant, artifact("tabular-classification"), "churn")
    v2 = register(served, tenant, artifact("tabular-classification"), "churn")  # version 2, same weights
    with served.client(tenant.key) as a, other.client(tenant.key) as b:
        created = a.post("/v1/deployments", json={"model": v1, "name": "api", "max_wait_ms": 0})
        assert created.status_code == 201, created.text
        wait_for(lambda: _answered_by(b, v1), timeout=30, every=0.1)

        patched = a.patch("/v1/deployments/api", json={"traffic": [{"version": v2, "weight": 100}]})
        assert patched.status_code == 200, patched.text
        wait_for(lambda: _answered_by(b, v2), timeout=30, every=0.1)
        wait_for(lambda: _answered_by(a, v2), timeout=30, every=0.1)

        assert a.delete("/v1/deployments/api").status_code == 200
        wait_for(lambda: _predict(b).status_code == 404, timeout=10, every=0.1)
        assert _predict(b).json()["error"]["code"] == "model_not_found"
