"""Inference through the usage gate: one usage event per served request with its real token
counts, rate limits with honest headers, and dropped streams billed for what was generated."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from openmaas import Client
from openmaas.engine.testing import build_tiny_model
from tests.support.served import Served, Tenant

ENGINE = {"kv_cache_memory_bytes": 4 * 1024 * 1024, "max_num_seqs": 4, "max_model_len": 256}


@pytest.fixture
def deployed(served: Served, tmp_path: Path) -> Tenant:
    tenant = served.tenant("acme")
    folder = build_tiny_model(tmp_path / "tiny", "llama", max_position_embeddings=256)
    with Client(served.url, tenant.key) as client:
        client.import_model(folder, "tiny")
        client.deployments.create("tiny", name="chat", engine=ENGINE)
        client.deployments.wait_ready("chat", timeout=60)
    return tenant


def _events(served: Served, key: str) -> list[dict]:  # type: ignore[type-arg]
    with served.client(key) as http:
        return list(http.get("/v1/usage", params={"granularity": "event", "limit": 100}).json()["data"])


def test_each_served_request_is_metered_once_with_its_tokens(served: Served, deployed: Tenant) -> None:
    ids = []
    with served.client(deployed.key) as http:
        for i in range(3):
            body = {"model": "chat", "prompt": f"count {i}", "max_tokens": 5, "temperature": 0}
            response = http.post("/v1/completions", json=body, headers={"x-request-id": f"req-meter-{i}"})
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit-requests"]
            assert int(response.headers["x-ratelimit-remaining-requests"]) >= 0
            usage = response.json()["usage"]
            ids.append((f"req-meter-{i}", usage["prompt_tokens"], usage["completion_tokens"]))
        refused = http.post("/v1/completions", json={"model": "chat", "prompt": "x", "temperature": 9})
        assert refused.status_code == 400
    events = _events(served, deployed.key)
    for request_id, prompt_tokens, completion_tokens in ids:
        mine = {e["unit"]: e["quantity"] for e in events if e["request_id"] == request_id}
        assert mine == {"requests": 1, "input_tokens": prompt_tokens, "output_tokens": completion_tokens}
    assert {e["request_id"] for e in events} == {i for i, _, _ in ids}  # nothing for the refused one


def test_rate_limit_answers_429_with_an_honest_retry_after(served: Served, deployed: Tenant) -> None:
    with served.admin() as admin:
        limits = admin.put(
            f"/v1/admin/organizations/{deployed.org_id}/rate_limits", json={"requests_per_minute": 2}
        )
        assert limits.status_code == 200, limits.text
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with served.client(deployed.key) as http:
        assert [http.post("/v1/chat/completions", json=body).status_code for _ in range(2)] == [200, 200]
        limited = http.post("/v1/chat/completions", json=body)
    assert limited.status_code == 429
    error = limited.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(_events(served, deployed.key)) == 2 * 3  # two served requests, three units each


def test_a_dropped_stream_is_billed_for_what_was_generated(served: Served, deployed: Tenant) -> None:
    body = {
        "model": "chat",
        "prompt": "tell a long story",
        "max_tokens": 200,
        "stream": True,
        "temperature": 1,
    }
    headers = {"Authorization": f"Bearer {deployed.key}", "x-request-id": "req-dropped"}
    with (
        httpx.Client(base_url=served.url, timeout=30) as http,
        http.stream("POST", "/v1/completions", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        for received, _ in enumerate(response.iter_lines()):
            if received >= 3:
                break  # the client goes away mid-stream
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mine = {
            e["unit"]: e["quantity"]
            for e in _events(served, deployed.key)
            if e["request_id"] == "req-dropped"
        }
        if mine:
            break
        time.sleep(0.05)
    assert mine["requests"] == 1 and 1 <= mine["output_tokens"] < 200
    runtime = served.platform.served_models.lookup(deployed.org_id, "chat").runtime  # type: ignore[union-attr]
    deadline = time.monotonic() + 5
    while runtime.engine.num_active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.engine.num_active == 0  # its blocks went back to the pool
