"""Hostile and extreme inputs to the inference routes: each is refused with a 4xx naming its field
(never a 500, never non-finite numbers served as an answer), and nothing is metered for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import Client
from openmaas.engine.testing import build_tiny_model
from tests.support.served import Served, Tenant

ENGINE = {"kv_cache_memory_bytes": 4 * 1024 * 1024, "max_num_seqs": 4, "max_model_len": 256}


def _error(response: httpx.Response) -> tuple[int, str | None, str | None]:
    error = response.json().get("error") or {}
    return response.status_code, error.get("param"), error.get("code")


def _events(served: Served, key: str) -> list[dict[str, Any]]:
    with served.client(key) as http:
        return list(http.get("/v1/usage", params={"granularity": "event", "limit": 100}).json()["data"])


@pytest.fixture
def llm(served: Served, tmp_path: Path) -> Tenant:
    tenant = served.tenant("acme")
    folder = build_tiny_model(tmp_path / "tiny", "llama", max_position_embeddings=256)
    with Client(served.url, tenant.key) as client:
        client.import_model(folder, "tiny")
        client.deployments.create("tiny", name="chat", engine=ENGINE)
        client.deployments.wait_ready("chat", timeout=60)
    return tenant


# OpenAI bounds `seed` to a signed 64-bit integer; torch.Generator.manual_seed overflowed past it.
@pytest.mark.parametrize("seed", [2**64, 2**63, -(2**63) - 1, -358365313929167241216])
def test_a_seed_past_64_bits_is_refused_naming_seed(served: Served, llm: Tenant, seed: int) -> None:
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    text = {"model": "chat", "prompt": "hi", "max_tokens": 2}
    with served.client(llm.key) as http:
        for path, body in (("/v1/chat/completions", chat), ("/v1/completions", text)):
            for stream in (False, True):
                refused = http.post(path, json={**body, "seed": seed, "stream": stream})
                assert _error(refused) == (400, "seed", "invalid_value"), refused.text
        for seed_ok in (2**63 - 1, -(2**63)):
            answered = http.post("/v1/chat/completions", json={**chat, "seed": seed_ok, "n": 3})
            assert answered.status_code == 200, answered.text
    assert len({e["request_id"] for e in _events(served, llm.key)}) == 2  # the two answered only
