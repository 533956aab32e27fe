"""Scale to zero, cold starts and the serving memory budget over a real server, with the clock
injected: idle deployments unload after their timeout and load again on their next request (once,
however many requests wait), and loads that would pass the budget unload the least recently used
idle deployments first, or fail saying why."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import Client
from openmaas.api.app import create_app
from openmaas.bootstrap import Platform, build_platform
from openmaas.serving import loading
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.serving.memory import MIB, artifact_bytes
from openmaas.serving.runtimes import load_runtime
from tests.integration.serving.predict_support import artifact, register
from tests.support.clock import FakeClock
from tests.support.platforms import make_platform
from tests.support.served import Served, serving
from tests.support.server import running_server

ROW = {"age": 40.0, "plan": "pro", "noise": 0.1}
MODEL_MB = artifact_bytes(artifact("tabular-classification")) / MIB


def _served(tmp_path: Path, database_url: str, clock: FakeClock, **settings: object) -> Iterator[Served]:
    platform: Platform = make_platform(
        tmp_path / "home", database_url, clock=clock, serving_sweep_interval_s=0, **settings
    )
    with serving(platform) as served:
        yield served


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def scaled(tmp_path: Path, database_url: str, clock: FakeClock) -> Iterator[Served]:
    yield from _served(tmp_path, database_url, clock)


@pytest.fixture
def budgeted(tmp_path: Path, database_url: str, clock: FakeClock) -> Iterator[Served]:
    # Room for one tiny model, not two.
    yield from _served(tmp_path, database_url, clock, serving_memory_budget_mb=MODEL_MB * 1.5)


def _predict(served: Served, key: str, name: str) -> httpx.Response:
    with served.client(key) as http:
        return http.post(f"/v1/deployments/{name}/predict", json={"inputs": [ROW]})


def _kinds(client: Client, name: str) -> list[str]:
    return [e.kind for e in client.deployments.events(name).data]


def test_an_idle_deployment_scales_to_zero_and_cold_starts_once(
    scaled: Served, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = scaled.tenant("acme")
    replicas = scaled.platform.replicas
    ref = register(scaled, tenant, artifact("tabular-classification"), "churn")
    with Client(scaled.url, tenant.key) as client:
        client.deployments.create(ref, name="api", min_replicas=0, idle_timeout_s=60)
        client.deployments.create(ref, name="pinned")
        client.deployments.wait_ready("api", timeout=60)
        client.deployments.wait_ready("pinned", timeout=60)
        assert _predict(scaled, tenant.key, "api").status_code == 200
        clock.advance(59)
        replicas.sweep().result()
        assert replicas.is_loaded(tenant.org_id, "api")  # not idle long enough yet
        clock.advance(2)
        replicas.sweep().result()
        assert not replicas.is_loaded(tenant.org_id, "api")
        assert replicas.is_loaded(tenant.org_id, "pinned")  # min_replicas 1 stays
        idle = client.deployments.get("api")
        assert idle.state == "ready" and idle.scaled_to_zero
        assert {d.name: d.scaled_to_zero for d in client.deployments.list().data} == {
            "api": True,
            "pinned": False,
        }
        assert _kinds(client, "api")[0] == "scaled_to_zero"

        # Hold the load until all eight requests have been waiting on it for a while.
        builds: list[str] = []
        release = threading.Event()

        def slow_load(task: str, folder: Path, config: RuntimeConfig) -> Any:
            builds.append(config.model_version)
            assert release.wait(30)
            return load_runtime(task, folder, config)

        monkeypatch.setattr(loading, "load_runtime", slow_load)
        with ThreadPoolExecutor(8) as pool:
            pending = [pool.submit(_predict, scaled, tenant.key, "api") for _ in range(8)]
            deadline = time.monotonic() + 30
            while not builds and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)
            release.set()
            answers = [p.result() for p in pending]
        assert builds == [ref]
        assert [a.status_code for a in answers] == [200] * 8
        assert {a.json()["model"] for a in answers} == {ref}
        kinds = _kinds(client, "api")
        assert kinds.count("cold_start") == 1 and kinds[0] == "cold_start"
        assert not client.deployments.get("api").scaled_to_zero
        assert replicas.is_loaded(tenant.org_id, "api")


def test_a_cold_start_slower_than_the_wait_answers_503_then_serves(
    tmp_path: Path, database_url: str, clock: FakeClock
) -> None:
    for served in _served(tmp_path, database_url, clock, cold_start_wait_s=0.001):
        tenant = served.tenant("acme")
        ref = register(served, tenant, artifact("tabular-classification"), "churn")
        with Client(served.url, tenant.key) as client:
            client.deployments.create(ref, name="api", min_replicas=0, idle_timeout_s=1)
            client.deployments.wait_ready("api", timeout=60)
            clock.advance(5)
            served.platform.replicas.sweep().result()
            waiting = _predict(served, tenant.key, "api")
            assert waiting.status_code == 503 and waiting.headers["retry-after"]
            assert waiting.json()["error"]["code"] == "model_loading"
            served.platform.replicas.sweep().result()  # queued behind the load: it has finished
            assert _predict(served, tenant.key, "api").status_code == 200


def test_the_budget_evicts_the_least_recently_used_idle_deployment(
    budgeted: Served, clock: FakeClock
) -> None:
    tenant = budgeted.tenant("acme")
    replicas = budgeted.platform.replicas
    ref = register(budgeted, tenant, artifact("tabular-classification"), "churn")
    with Client(budgeted.url, tenant.key) as client:
        client.deployments.create(ref, name="a")
        client.deployments.wait_ready("a", timeout=60)
        clock.advance(1)
        client.deployments.create(ref, name="b")
        client.deployments.wait_ready("b", timeout=60)
        assert not replicas.is_loaded(tenant.org_id, "a") and replicas.is_loaded(tenant.org_id, "b")
        assert _kinds(client, "a")[0] == "evicted"
        assert "memory budget" in client.deployments.events("a").data[0].message

        clock.advance(1)
        assert _predict(budgeted, tenant.key, "a").status_code == 200  # cold start evicts b
        assert replicas.is_loaded(tenant.org_id, "a") and not replicas.is_loaded(tenant.org_id, "b")
        assert _kinds(client, "b")[0] == "evicted"

        # A deployment with a request in flight is never evicted: the load fails saying why.
        served_a = budgeted.platform.served_models.lookup(tenant.org_id, "a")
        assert served_a is not None
        served_a.runtime.in_flight += 1
        try:
            clock.advance(1)
            busy = _predict(budgeted, tenant.key, "b")
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "insufficient_memory"
            assert busy.headers["retry-after"]
            assert _kinds(client, "b")[0] == "cold_start_failed"
            client.deployments.create(ref, name="c")
            with pytest.raises(RuntimeError, match="memory budget"):
                client.deployments.wait_ready("c", timeout=60)
        finally:
            served_a.runtime.in_flight -= 1
        assert replicas.is_loaded(tenant.org_id, "a")
        assert client.deployments.get("b").state == "ready"  # still loads on a later request
        assert _predict(budgeted, tenant.key, "b").status_code == 200


def test_a_model_larger_than_the_budget_fails_to_deploy(
    tmp_path: Path, database_url: str, clock: FakeClock
) -> None:
    for served in _served(tmp_path, database_url, clock, serving_memory_budget_mb=MODEL_MB / 2):
        tenant = served.tenant("acme")
        ref = register(served, tenant, artifact("tabular-classification"), "churn")
        with Client(served.url, tenant.key) as client:
            client.deployments.create(ref, name="big")
            with pytest.raises(RuntimeError, match="memory budget"):
                client.deployments.wait_ready("big", timeout=60)
            assert client.deployments.get("big").error.startswith("'big' needs")  # type: ignore[union-attr]


def test_scaling_options_are_validated(scaled: Served) -> None:
    tenant = scaled.tenant("acme")
    ref = register(scaled, tenant, artifact("tabular-classification"), "churn")
    with scaled.client(tenant.key) as http:
        for body, param in (
            ({"model": ref, "min_replicas": 2}, "min_replicas"),
            ({"model": ref, "min_replicas": -1}, "min_replicas"),
            ({"model": ref, "min_replicas": 0, "idle_timeout_s": 0}, "idle_timeout_s"),
            ({"model": ref, "idle_timeout_s": "soon"}, "idle_timeout_s"),
        ):
            response = http.post("/v1/deployments", json=body)
            assert response.status_code == 422, response.text
            assert response.json()["error"]["param"] == param
        created = http.post("/v1/deployments", json={"model": ref, "name": "api", "min_replicas": 0})
        assert created.status_code == 201
        assert (
            created.json()["config"]["min_replicas"] == 0
            and created.json()["config"]["idle_timeout_s"] == 300
        )


def test_after_a_restart_a_scale_to_zero_deployment_waits_for_its_first_request(
    scaled: Served, clock: FakeClock
) -> None:
    tenant = scaled.tenant("acme")
    ref = register(scaled, tenant, artifact("tabular-classification"), "churn")
    with Client(scaled.url, tenant.key) as client:
        client.deployments.create(ref, name="api", min_replicas=0)
        client.deployments.wait_ready("api", timeout=60)
    restarted = build_platform(scaled.platform.settings, clock=clock)
    try:
        with running_server(create_app(restarted)) as url:
            assert not restarted.replicas.is_loaded(tenant.org_id, "api")
            again = Served(url, restarted, scaled.admin_key)
            assert _predict(again, tenant.key, "api").status_code == 200
            assert restarted.replicas.is_loaded(tenant.org_id, "api")
            with Client(url, tenant.key) as client:
                assert _kinds(client, "api")[0] == "cold_start"
    finally:
        restarted.close()


def test_llms_cannot_scale_to_zero(scaled: Served, tmp_path: Path) -> None:
    from openmaas.engine.testing import build_tiny_model

    tenant = scaled.tenant("acme")
    folder = build_tiny_model(tmp_path / "tiny", "qwen2", max_position_embeddings=128)
    with Client(scaled.url, tenant.key) as client:
        client.import_model(folder, "tiny")
    with scaled.client(tenant.key) as http:
        response = http.post("/v1/deployments", json={"model": "tiny", "min_replicas": 0})
        assert response.status_code == 422 and response.json()["error"]["param"] == "min_replicas"
        assert http.get("/v1/deployments").json()["data"] == []  # nothing half-made
