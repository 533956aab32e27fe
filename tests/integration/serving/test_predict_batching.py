"""The batcher over HTTP: concurrent requests merge (order and per-request errors kept), a full
queue answers 503 with Retry-After, a deadline 504, a dropped client's work never runs, and a
version swap under load fails no request."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from openmaas import Client
from openmaas.serving.runtimes.predictor import PredictorRuntime
from tests.integration.serving.predict_support import artifact, b64, digit_png, register
from tests.support.platforms import make_platform
from tests.support.served import Served, Tenant, serving


class HeldModel(torch.nn.Module):
    """Wraps a replica's model: counts the rows it sees and waits while `release` is unset."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.release = threading.Event()
        self.entered = threading.Event()
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        self.release.wait(10)
        self.rows += len(x)
        out: torch.Tensor = self.inner(x)
        return out


def _deploy(served: Served, family: str, **options: Any) -> tuple[Tenant, PredictorRuntime]:
    tenant = served.tenant("acme")
    ref = register(served, tenant, artifact(family), "m")
    with Client(served.url, tenant.key) as client:
        client.deployments.create(ref, name="api", **options)
        client.deployments.wait_ready("api", timeout=60)
    model = served.platform.served_models.lookup(tenant.org_id, "api")
    assert model is not None
    return tenant, model.runtime


@contextmanager
def _held(runtime: PredictorRuntime) -> Iterator[HeldModel]:
    predictor = runtime.predictors[0]
    original = predictor.model
    held = HeldModel(original)
    predictor.model = held
    try:
        yield held
    finally:
        held.release.set()
        predictor.model = original


def _row(age: float) -> dict[str, Any]:
    return {"age": age, "plan": "basic" if age > 50 else "pro", "noise": 0.0}


def _post(served: Served, key: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    with served.client(key) as http:
        return http.post("/v1/deployments/api/predict", json=body, headers=headers)


def test_concurrent_requests_merge_and_keep_order(served: Served) -> None:
    tenant, runtime = _deploy(served, "tabular-classification", max_batch_size=64, max_wait_ms=50)
    bodies = [{"inputs": [_row(20 + i), _row(80 - i)]} for i in range(16)]
    alone = [_post(served, tenant.key, body).json()["predictions"] for body in bodies[:3]]
    batches_before = runtime.stats.batches
    with _held(runtime) as held, ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(_post, served, tenant.key, body) for body in bodies]
        assert held.entered.wait(10)
        time.sleep(0.3)  # the rest queue up behind the held batch
        held.release.set()
        responses = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    # Each request's rows get the answers they get alone: the same labels, and probabilities equal up
    # to float rounding (a batch of other row counts may take another matmul kernel: on AVX-512 CPUs
    # MKL's results for a row differ in the last bits between batch sizes).
    for response, solo in zip(responses[:3], alone, strict=True):
        merged = response.json()["predictions"]
        assert [p["label"] for p in merged] == [p["label"] for p in solo]
        for m, a in zip(merged, solo, strict=True):
            assert m["probabilities"] == pytest.approx(a["probabilities"], rel=1e-5, abs=1e-7)
    for response, body in zip(responses, bodies, strict=True):
        labels = [p["label"] for p in response.json()["predictions"]]
        assert labels == ["no", "yes"], body
    assert runtime.stats.max_rows > 2 and runtime.stats.multi_job_batches >= 1
    assert runtime.stats.batches - batches_before < 16


def test_an_undecodable_image_fails_alone_in_its_batch(served: Served) -> None:
    tenant, runtime = _deploy(served, "image-classification", max_batch_size=64, max_wait_ms=50)
    good = {"inputs": [b64(digit_png(4))]}
    bad = {"inputs": [b64(digit_png(4)), b64(b"\x89PNG but broken")]}
    with _held(runtime) as held, ThreadPoolExecutor(8) as pool:
        # The first request holds the model; the rest, the bad one among them, queue behind it and
        # merge. (Submitted together, the bad one could arrive first and run alone.)
        futures = [pool.submit(_post, served, tenant.key, good)]
        assert held.entered.wait(10)
        futures += [pool.submit(_post, served, tenant.key, bad if i == 2 else good) for i in range(1, 8)]
        deadline = time.monotonic() + 10
        while runtime.batcher.queued < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        held.release.set()
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [422 if i == 2 else 200 for i in range(8)]
    assert responses[2].json()["error"]["param"] == "inputs.1"
    assert runtime.stats.split_batches >= 1  # it failed inside a merged batch, then alone


def test_a_full_queue_answers_503_with_retry_after(served: Served) -> None:
    tenant, runtime = _deploy(served, "tabular-classification", max_batch_size=1, max_queue=2)
    with _held(runtime) as held, ThreadPoolExecutor(3) as pool:
        first = pool.submit(_post, served, tenant.key, {"inputs": [_row(30)]})
        assert held.entered.wait(10)
        queued = [pool.submit(_post, served, tenant.key, {"inputs": [_row(40)]}) for _ in range(2)]
        deadline = time.monotonic() + 10
        while runtime.batcher.queued < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = _post(served, tenant.key, {"inputs": [_row(50)]})
        held.release.set()
        assert [f.result().status_code for f in (first, *queued)] == [200, 200, 200]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"


def test_past_its_deadline_a_request_answers_504_and_its_work_is_dropped(served: Served) -> None:
    tenant, runtime = _deploy(served, "tabular-classification", max_batch_size=1)
    with _held(runtime) as held, ThreadPoolExecutor(1) as pool:
        first = pool.submit(_post, served, tenant.key, {"inputs": [_row(30)]})
        assert held.entered.wait(10)
        started = time.monotonic()
        late = _post(served, tenant.key, {"inputs": [_row(40)]}, **{"X-Request-Timeout": "0.2"})
        assert time.monotonic() - started < 3
        by_body = _post(served, tenant.key, {"inputs": [_row(42)], "timeout": 0.2})
        held.release.set()
        assert first.result().status_code == 200
        time.sleep(0.2)
    assert late.status_code == 504 and by_body.status_code == 504
    assert held.rows == 1  # only the first request ever reached the model
    assert runtime.stats.expired == 2


def test_a_client_that_disconnects_cancels_its_queued_work(served: Served) -> None:
    tenant, runtime = _deploy(served, "tabular-classification", max_batch_size=1)
    body = httpx.Request("POST", "/", json={"inputs": [_row(40)]}).content
    host, port = served.url.removeprefix("http://").split(":")
    with _held(runtime) as held, ThreadPoolExecutor(1) as pool:
        first = pool.submit(_post, served, tenant.key, {"inputs": [_row(30)]})
        assert held.entered.wait(10)
        with socket.create_connection((host, int(port))) as raw:
            head = (
                f"POST /v1/deployments/api/predict HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {tenant.key}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            raw.sendall(head.encode() + body)
            deadline = time.monotonic() + 10
            while runtime.batcher.queued < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(0.2)  # the server sees the connection close
        held.release.set()
        assert first.result().status_code == 200
        deadline = time.monotonic() + 5
        while runtime.stats.cancelled < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert runtime.stats.cancelled == 1 and held.rows == 1


def test_swapping_versions_under_load_fails_no_request(served: Served) -> None:
    tenant = served.tenant("acme")
    first = register(served, tenant, artifact("tabular-classification"), "churn")
    second = register(served, tenant, artifact("tabular-classification", variant=1), "churn")
    with Client(served.url, tenant.key) as client:
        client.deployments.create(first, name="api", max_wait_ms=1)
        client.deployments.wait_ready("api", timeout=60)
    old = served.platform.served_models.lookup(tenant.org_id, "api")
    assert old is not None
    stop = threading.Event()

    def load() -> list[tuple[int, str]]:
        seen = []
        with served.client(tenant.key) as http:
            while not stop.is_set():
                response = http.post("/v1/deployments/api/predict", json={"inputs": [_row(33)]})
                seen.append((response.status_code, response.json().get("model", response.text)))
        return seen

    with ThreadPoolExecutor(6) as pool:
        clients = [pool.submit(load) for _ in range(6)]
        time.sleep(0.5)
        with served.client(tenant.key) as http:
            patched = http.patch("/v1/deployments/api", json={"model": second})
            assert patched.status_code == 200, patched.text
            assert patched.json()["state"] == "loading"
        with Client(served.url, tenant.key) as client:
            ready = client.deployments.wait_ready("api", timeout=60)
        time.sleep(0.5)
        stop.set()
        seen = [answer for c in clients for answer in c.result()]
    assert ready.model == second
    assert {status for status, _ in seen} == {200}, [s for s in seen if s[0] != 200][:3]
    models = [model for _, model in seen]
    assert models[0] == first and second in models
    with Client(served.url, tenant.key) as client:
        deadline = time.monotonic() + 30
        while (kinds := [e.kind for e in client.deployments.events("api").data])[0] != "stopped_old":
            assert time.monotonic() < deadline, kinds
            time.sleep(0.02)
    assert kinds[:5] == ["stopped_old", "draining", "switched", "starting", "updating"]
    assert old.runtime.batcher.queued == 0
    with served.client(tenant.key) as http:
        assert http.post("/v1/deployments/api/predict", json={"inputs": [_row(33)]}).json()["model"] == second


# A request may hold more rows than the deployment's max_batch_size (it was refused with 422
# too_many_inputs): the batcher runs it in slices (issue 15, item 9).


def _usage(served: Served, key: str, request_id: str) -> dict[str, int]:
    with served.client(key) as http:
        events = http.get("/v1/usage", params={"granularity": "event", "limit": 100}).json()["data"]
    return {e["unit"]: e["quantity"] for e in events if e["request_id"] == request_id}


def test_a_request_larger_than_max_batch_size_is_answered_in_micro_batches(served: Served) -> None:
    tenant, runtime = _deploy(served, "tabular-classification", max_batch_size=8)
    rows = [_row(18 + i * 0.5) for i in range(130)]
    with served.client(tenant.key) as http:
        whole = http.post("/v1/deployments/api/predict", json={"inputs": rows})
        assert whole.status_code == 200, whole.text
        parts = [
            http.post("/v1/deployments/api/predict", json={"inputs": rows[i : i + 8]}).json()["predictions"]
            for i in range(0, len(rows), 8)
        ]
    got = whole.json()["predictions"]
    assert [p["label"] for p in got] == [p["label"] for part in parts for p in part]
    for one, expected in zip(got, (p for part in parts for p in part), strict=True):
        assert one["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    assert runtime.stats.max_rows <= 8
    assert _usage(served, tenant.key, whole.headers["x-request-id"]) == {"requests": 1, "rows": 130}


def test_errors_in_a_large_request_name_its_own_rows(served: Served) -> None:
    tenant, _ = _deploy(served, "tabular-classification", max_batch_size=8)
    rows = [_row(30 + i) for i in range(60)]
    rows[45] = {**rows[45], "age": 1e200}
    with served.client(tenant.key) as http:
        refused = http.post("/v1/deployments/api/predict", json={"inputs": rows})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["param"] == "inputs.45.age"
    assert refused.json()["error"]["message"].startswith("inputs.45.age: ")
    assert _usage(served, tenant.key, refused.headers["x-request-id"]) == {}


def test_an_undecodable_image_in_a_later_slice_is_named_by_its_row(served: Served) -> None:
    tenant, _ = _deploy(served, "image-classification", max_batch_size=4)
    images = [b64(digit_png(i % 10)) for i in range(11)]
    images[9] = b64(b"\x89PNG but broken")
    with served.client(tenant.key) as http:
        refused = http.post("/v1/deployments/api/predict", json={"inputs": images})
        images[9] = b64(digit_png(9))
        answered = http.post("/v1/deployments/api/predict", json={"inputs": images})
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "inputs.9", refused.text
    assert answered.status_code == 200 and len(answered.json()["predictions"]) == 11


@pytest.fixture
def few_rows(tmp_path: Path, database_url: str) -> Iterator[Served]:
    """A server whose predictions take at most 50 rows."""
    platform = make_platform(tmp_path / "home", database_url, max_body_bytes=64 * 1024, predict_max_rows=50)
    with serving(platform) as served:
        yield served


def test_a_request_past_the_servers_row_limit_is_refused(few_rows: Served) -> None:
    tenant, _ = _deploy(few_rows, "tabular-classification", max_batch_size=8)
    with few_rows.client(tenant.key) as http:
        refused = http.post("/v1/deployments/api/predict", json={"inputs": [_row(40)] * 51})
        answered = http.post("/v1/deployments/api/predict", json={"inputs": [_row(40)] * 50})
    error = refused.json()["error"]
    assert refused.status_code == 422 and (error["param"], error["code"]) == ("inputs", "too_many_inputs")
    assert "at most 50" in error["message"]
    assert answered.status_code == 200 and len(answered.json()["predictions"]) == 50
