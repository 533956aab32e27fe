"""A tabular model served by Ray-actor replicas (`placement: ray`) on a real local Ray instance:
a replica killed under concurrent predict load fails no request, every served request is metered
exactly once, and the replica comes back; scaling the replicas under load fails none either; a
server without Ray refuses the placement with a 422 naming it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.cluster_serving.support import metered_requests, server, wait_ready
from tests.integration.serving.predict_support import artifact, register
from tests.support.served import Served, Tenant

ROW = {"age": 40.0, "plan": "pro", "noise": 0.1}
THREADS = 8


@pytest.fixture(scope="module")
def on_ray(tmp_path_factory: pytest.TempPathFactory, ray_address: str) -> Iterator[Served]:
    # No per-minute request limit: the load tests send a few thousand predictions a minute on a
    # fast machine, and a 429 would hide what they test (the replicas, not the rate limiter).
    home = tmp_path_factory.mktemp("on-ray")
    with server(home, ray_address=ray_address, rate_limit_requests_per_minute=None) as served:
        yield served


@pytest.fixture(scope="module")
def deployed(on_ray: Served) -> tuple[Tenant, str]:
    """`churn` deployed on two Ray replicas (a quarter CPU each, so rolling updates fit 2 CPUs)."""
    tenant = on_ray.tenant("acme")
    ref = register(on_ray, tenant, artifact("tabular-classification"), "churn")
    body = {"model": ref, "name": "churn", "placement": "ray", "replicas": 2, "cpus": 0.25}
    with on_ray.client(tenant.key) as http:
        created = http.post("/v1/deployments", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["config"]["placement"] == "ray"
        wait_ready(http, "churn")
    return tenant, "churn"


def _load(
    served: Served, key: str, name: str, per_thread: int, prefix: str, during: Callable[[], None]
) -> list[tuple[str, int, str]]:
    """`THREADS` threads sending predictions one after another: `during` runs once a quarter of
    `THREADS * per_thread` are done, and each thread goes on until it has sent `per_thread` and
    `during` has returned. Each answer as (request id, status, body)."""
    done = threading.Semaphore(0)
    finished = threading.Event()

    def worker(thread: int) -> list[tuple[str, int, str]]:
        answers = []
        with served.client(key) as http:
            i = 0
            while i < per_thread or not finished.is_set():
                request_id = f"{prefix}-{thread}-{i}"
                body, headers = {"inputs": [ROW]}, {"x-request-id": request_id}
                response = http.post(f"/v1/deployments/{name}/predict", json=body, headers=headers)
                answers.append((request_id, response.status_code, response.text))
                done.release()
                i += 1
        return answers

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(worker, t) for t in range(THREADS)]
        try:
            for _ in range(THREADS * per_thread // 4):
                done.acquire(timeout=60)
            during()
        finally:
            finished.set()
        return [answer for future in futures for answer in future.result()]


def test_a_killed_replica_fails_no_request_and_comes_back(
    on_ray: Served, deployed: tuple[Tenant, str], caplog: pytest.LogCaptureFixture
) -> None:
    import ray

    tenant, name = deployed
    runtime = on_ray.platform.served_models.lookup(tenant.org_id, name).runtime  # type: ignore[union-attr]
    victim = runtime.pool.actors[0]
    caplog.set_level(logging.INFO, logger="openmaas.serving")

    answers = _load(on_ray, tenant.key, name, 15, "kill", lambda: ray.kill(victim))

    failed = [(i, s, t) for i, s, t in answers if s != 200]
    assert failed == []
    metered = metered_requests(on_ray, tenant.key)
    assert {i: metered[i] for i, _, _ in answers} == {i: 1 for i, _, _ in answers}
    events = [r.getMessage() for r in caplog.records]
    assert any("replica_recreated" in e for e in events)  # the death was seen…
    assert any("replica_call_retried" in e for e in events)  # …by a call, answered by the other one
    # The killed replica is replaced by a new actor that loads and answers.
    assert runtime.pool.actors[0] is not victim
    assert ray.get(runtime.pool.actors[0].facts.remote(), timeout=60).task == "tabular-classification"
    assert len(runtime.pool.actors) == 2
    with on_ray.client(tenant.key) as http:
        kinds = [e["kind"] for e in http.get(f"/v1/deployments/{name}/events").json()["data"]]
    assert "replica_restarted" in kinds  # the deployment's events tell the owner what happened


def test_scaling_the_replicas_under_load_fails_no_request(
    on_ray: Served, deployed: tuple[Tenant, str]
) -> None:
    tenant, name = deployed

    def scale() -> None:
        with on_ray.client(tenant.key) as http:
            patched = http.patch(f"/v1/deployments/{name}", json={"replicas": 1})
            assert patched.status_code == 200, patched.text
            assert wait_ready(http, name)["replicas"] == 1

    answers = _load(on_ray, tenant.key, name, 15, "scale", scale)

    assert [(i, s, t) for i, s, t in answers if s != 200] == []
    metered = metered_requests(on_ray, tenant.key)
    assert all(metered[i] == 1 for i, _, _ in answers)
    runtime = on_ray.platform.served_models.lookup(tenant.org_id, name).runtime  # type: ignore[union-attr]
    assert runtime.replicas == 1


def test_predictions_and_explanations_come_from_the_replicas(
    on_ray: Served, deployed: tuple[Tenant, str]
) -> None:
    tenant, name = deployed
    with on_ray.client(tenant.key) as http:
        predicted = http.post(f"/v1/deployments/{name}/predict", json={"inputs": [ROW, ROW], "top_k": 1})
        explained = http.post(f"/v1/deployments/{name}/explain", json={"inputs": [ROW], "steps": 8})
        wrong = http.post(f"/v1/deployments/{name}/predict", json={"inputs": [{"age": "old"}]})
    assert predicted.status_code == 200, predicted.text
    assert [len(p["probabilities"]) for p in predicted.json()["predictions"]] == [1, 1]
    assert explained.status_code == 200, explained.text
    assert set(explained.json()["explanations"][0]["attributions"]) >= {"age", "plan", "noise"}
    # Checked against the signature in the API server, before any replica is called.
    assert wrong.status_code == 422 and wrong.json()["error"]["param"].startswith("inputs")


def test_an_idle_ray_deployment_scales_to_zero_and_starts_again(
    on_ray: Served, deployed: tuple[Tenant, str]
) -> None:
    import ray

    tenant, _ = deployed
    ref = register(on_ray, tenant, artifact("tabular-classification"), "idle")
    body = {"model": ref, "placement": "ray", "cpus": 0.25, "min_replicas": 0, "idle_timeout_s": 0.2}
    with on_ray.client(tenant.key) as http:
        assert http.post("/v1/deployments", json=body).status_code == 201
        wait_ready(http, "idle")
        actors = list(on_ray.platform.served_models.lookup(tenant.org_id, "idle").runtime.pool.actors)  # type: ignore[union-attr]
        time.sleep(0.3)  # past its idle timeout
        on_ray.platform.replicas.sweep().result(timeout=30)
        assert http.get("/v1/deployments/idle").json()["scaled_to_zero"] is True
        with pytest.raises(ray.exceptions.RayActorError):  # its actors were stopped
            ray.get(actors[0].facts.remote(), timeout=30)
        again = http.post("/v1/deployments/idle/predict", json={"inputs": [ROW]})
        assert again.status_code == 200, again.text  # the next request started new replicas


def test_placement_ray_without_ray_is_refused_naming_placement(tmp_path: Path) -> None:
    with server(tmp_path / "home") as served:
        tenant = served.tenant("acme")
        ref = register(served, tenant, artifact("tabular-classification"), "churn")
        with served.client(tenant.key) as http:
            refused = http.post("/v1/deployments", json={"model": ref, "placement": "ray"})
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["param"] == "placement"
            assert "OPENMAAS_RAY_ADDRESS" in error["message"]
            local_cpus = http.post("/v1/deployments", json={"model": ref, "cpus": 2})
            assert local_cpus.status_code == 422
            assert local_cpus.json()["error"]["param"] == "cpus"
            assert http.get("/v1/deployments").json()["data"] == []  # nothing half-made
