"""A deployment with speculative decoding (`engine: {"speculative_tokens": 4}`) served through the
official `openai` SDK: completions and chat, streamed and not, answer what the engine answers without
speculation; `/metrics` counts the guesses and the accepted ones; a bad speculation setting is refused
with 422 naming it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from openmaas import Client
from openmaas.engine.llm_engine import LLMEngine
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.testing import build_tiny_model
from tests.integration.jobs.harness import fast_server
from tests.support.served import Served, Tenant

ENGINE = {"kv_cache_memory_bytes": 4 * 1024 * 1024, "max_num_seqs": 8, "max_model_len": 128}
# Small weights: the tiny model falls into loops, so its output matches earlier n-grams.
PROMPT = [5, 17, 42, 99, 7, 256, 31, 5, 17, 42]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("speculative")
    with fast_server(home / "home", f"sqlite:///{home / 'openmaas.db'}") as served:
        yield served


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "tiny"
    return build_tiny_model(folder, "qwen2", max_position_embeddings=128, initializer_range=0.05, seed=3)


@pytest.fixture(scope="module")
def acme(served: Served, model: Path) -> Tenant:
    tenant = served.tenant("acme")
    with Client(served.url, tenant.key) as client:
        client.import_model(model, "tiny")
    return tenant


def _deploy(served: Served, tenant: Tenant, engine: dict[str, object]) -> None:
    with served.client(tenant.key) as http:
        created = http.post("/v1/deployments", json={"model": "tiny", "name": "tiny", "engine": engine})
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 120
        while (state := http.get("/v1/deployments/tiny").json()["state"]) != "ready":
            assert state in ("pending", "loading") and time.monotonic() < deadline, state
            time.sleep(0.1)


def _metric(served: Served, name: str) -> float:
    with served.client() as http:
        text = http.get("/metrics").text
    lines = [
        line for line in text.splitlines() if line.startswith(name + "{") and 'deployment="tiny"' in line
    ]
    assert len(lines) == 1, lines
    return float(lines[0].rsplit(" ", 1)[1])


def test_a_speculative_deployment_answers_as_the_engine_does_without_speculation(
    served: Served, acme: Tenant, model: Path
) -> None:
    _deploy(served, acme, {**ENGINE, "speculative_tokens": 4})
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=acme.key, max_retries=0)
    engine = LLMEngine.from_pretrained(model, **ENGINE)  # speculation off
    want = engine.generate([PROMPT], SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True))[0][0]

    reply = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0)
    assert reply.choices[0].text == want.text and reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 40
    streamed = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=40, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == want.text

    messages = [{"role": "user", "content": "repeat: ab ab ab ab"}]
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, temperature=0)  # type: ignore[arg-type]
    chunks = client.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=30,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == chat.choices[0].message.content
    )
    assert _metric(served, "openmaas_llm_spec_accepted_tokens_total") > 0
    assert _metric(served, "openmaas_llm_spec_draft_tokens_total") >= _metric(
        served, "openmaas_llm_spec_accepted_tokens_total"
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("speculative_tokens", -1),
        ("speculative_tokens", 17),
        ("prompt_lookup_min", 0),
        ("prompt_lookup_max", "4"),
    ],
)
def test_a_bad_speculation_setting_is_refused_naming_it(
    served: Served, acme: Tenant, setting: str, value: object
) -> None:
    with served.client(acme.key) as http:
        refused = http.post(
            "/v1/deployments", json={"model": "tiny", "name": "bad", "engine": {setting: value}}
        )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["param"] == f"engine.{setting}"


def test_prompt_lookup_min_above_max_is_refused_naming_it(served: Served, acme: Tenant) -> None:
    engine = {"speculative_tokens": 4, "prompt_lookup_min": 5}  # above the default max, 4
    with served.client(acme.key) as http:
        refused = http.post("/v1/deployments", json={"model": "tiny", "name": "bad", "engine": engine})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["param"] == "engine.prompt_lookup_min"
