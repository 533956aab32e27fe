"""Fine-tuned adapters served on their base deployment, through the official `openai` SDK: the
`ft:` id answers chat completions, completions and responses with the adapter applied (the engine's
own answer on that adapter), its usage is metered under the adapter's version; another organisation
gets 404 and, without a running base, the caller is told to deploy it. The adapter is what a
fine-tuning job registers (a version in peft's layout and its succeeded `fine_tune` job); each of its
job's checkpoints answers by its own id (`…:ckpt-step-N`) with the weights of that step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from openmaas import Client
from openmaas.engine.llm_engine import LLMEngine
from openmaas.engine.lora import LoraRequest
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.testing import build_tiny_model
from tests.integration.jobs.harness import fast_server
from tests.support.adapters import Adapter, register_adapter
from tests.support.served import Served, Tenant

ENGINE = {"kv_cache_memory_bytes": 4 * 1024 * 1024, "max_num_seqs": 8, "max_model_len": 128, "max_loras": 2}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("adapters")
    with fast_server(home / "home", f"sqlite:///{home / 'openmaas.db'}") as served:
        yield served


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny", "qwen2", max_position_embeddings=128)


@pytest.fixture(scope="module")
def acme(served: Served, base: Path) -> Tenant:
    tenant = served.tenant("acme")
    with Client(served.url, tenant.key) as client:
        client.import_model(base, "tiny")
    return tenant


@pytest.fixture(scope="module")
def adapters(served: Served, acme: Tenant, base: Path) -> list[Adapter]:
    return [
        register_adapter(served, acme, base, suffix, seed) for seed, suffix in enumerate(("support", "sales"))
    ]


def _deploy(served: Served, tenant: Tenant, model: str = "tiny", name: str = "tiny") -> None:
    with served.client(tenant.key) as http:
        created = http.post("/v1/deployments", json={"model": model, "name": name, "engine": ENGINE})
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 120
        while (state := http.get(f"/v1/deployments/{name}").json()["state"]) != "ready":
            assert state in ("pending", "loading") and time.monotonic() < deadline, state
            time.sleep(0.1)


def _client(served: Served, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=tenant.key, max_retries=0)


def _engine_text(base: Path, adapter: Adapter | None, prompt: list[int], max_tokens: int) -> str:
    engine = LLMEngine.from_pretrained(base, **ENGINE)
    lora = None if adapter is None else LoraRequest(adapter.version_id, adapter.folder)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    return engine.generate([prompt], params, [lora])[0][0].text


def test_adapters_answer_on_their_base_deployment(
    served: Served, acme: Tenant, base: Path, adapters: list[Adapter]
) -> None:
    client = _client(served, acme)
    support, sales = adapters
    with pytest.raises(openai.ConflictError) as undeployed:  # no base deployment yet: say to deploy it
        client.completions.create(model=support.model, prompt="Hello", max_tokens=4)
    assert undeployed.value.code == "base_not_deployed" and "deploy tiny:1" in undeployed.value.message
    _deploy(served, acme)

    prompt = [5, 17, 42, 99, 7, 256, 31]
    texts = {}
    for adapter in (support, sales, support.checkpoint, None):
        model = "tiny" if adapter is None else adapter.model
        reply = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
        assert reply.model == model and reply.usage is not None and reply.usage.prompt_tokens == len(prompt)
        texts[model] = reply.choices[0].text
        if reply.choices[0].finish_reason == "length":  # the engine's own answer on that adapter
            assert texts[model] == _engine_text(base, adapter, prompt, 8)
    assert len(set(texts.values())) == 4  # each adapter answers otherwise than the base and each other

    chat = client.chat.completions.create(
        model=support.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0
    )
    assert chat.model == support.model and chat.usage is not None and chat.usage.completion_tokens >= 1
    streamed = client.chat.completions.create(
        model=support.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0,
        stream=True,
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == chat.choices[0].message.content
    response = client.responses.create(model=sales.model, input="Hi", max_output_tokens=6, temperature=0)
    assert response.model == sales.model and response.status in ("completed", "incomplete")

    with served.client(acme.key) as http:  # usage by model shows the adapter's own version
        events = http.get("/v1/usage", params={"granularity": "event", "limit": 100}).json()["data"]
    by_model = {e["model"] for e in events}
    assert {support.version_id, sales.version_id} <= by_model


def test_other_organisations_and_unknown_ids_get_404(
    served: Served, acme: Tenant, adapters: list[Adapter]
) -> None:
    globex = served.tenant("globex")
    for tenant, model in (
        (globex, adapters[0].model),  # another organisation's adapter
        (acme, adapters[0].model.rsplit(":", 1)[0] + ":ftjob-nothing"),  # no such job
        (globex, adapters[0].model + ":ckpt-step-3"),  # another organisation's checkpoint
        (acme, adapters[0].model + ":ckpt-step-4"),  # a step with no checkpoint
        (acme, adapters[0].model + ":ckpt-step-x"),
        (acme, adapters[0].model.replace(":acme:", ":other:")),  # the id's parts must match the job's
    ):
        with pytest.raises(openai.NotFoundError) as missing:
            _client(served, tenant).completions.create(model=model, prompt="Hi", max_tokens=2)
        assert (missing.value.code, missing.value.body["param"]) == ("model_not_found", "model")  # type: ignore[index]


def test_models_list_and_retrieve_show_the_adapters_the_caller_may_call(
    served: Served, acme: Tenant, adapters: list[Adapter]
) -> None:
    client = _client(served, acme)
    listed = {m.id: m for m in client.models.list()}
    assert {"tiny", *(a.model for a in adapters)} <= set(listed)
    assert not [name for name in listed if ":ckpt-step-" in name]  # as OpenAI: no checkpoints listed
    for adapter in adapters:
        card = listed[adapter.model]
        assert card.owned_by == acme.org_id and card.created > 0
        assert (card.model_extra or {}).get("root") == (card.model_extra or {}).get("parent") == "tiny:1"
    support = adapters[0]
    assert client.models.retrieve(support.model).owned_by == acme.org_id
    assert support.checkpoint is not None and client.models.retrieve(support.checkpoint.model).id == (
        support.checkpoint.model
    )
    assert client.models.retrieve("tiny").id == "tiny"
    globex = _client(served, served.tenant("globex-models"))
    assert not [m.id for m in globex.models.list() if m.id.startswith("ft:")]
    for name in (support.model, support.model + ":ckpt-step-3", "tiny", "ft:nothing"):
        with pytest.raises(openai.NotFoundError) as missing:
            globex.models.retrieve(name)
        assert missing.value.code == "model_not_found"


def test_an_adapter_is_still_refused_as_a_deployment_of_its_own(
    served: Served, acme: Tenant, adapters: list[Adapter]
) -> None:
    with served.client(acme.key) as http:
        refused = http.post("/v1/deployments", json={"model": "tiny-support:1", "name": "support"})
    assert refused.status_code == 422
    assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == (
        "adapter_not_deployable",
        "model",
    )


def test_a_marketplace_buyer_calls_a_published_adapter_on_its_own_base_deployment(
    served: Served, acme: Tenant, adapters: list[Adapter]
) -> None:
    price = [{"unit": "requests", "price": "0.02"}]
    sales = adapters[1]
    with served.client(acme.key) as http:
        listed = http.post("/v1/marketplace/listings", json={"model": "tiny:1", "components": price})
        assert listed.status_code == 201, listed.text
    buyer = served.tenant("initech")
    _deploy(served, buyer, listed.json()["id"], "bought")  # the base, bought from its listing
    client = _client(served, buyer)
    with pytest.raises(openai.NotFoundError):  # the adapter is not for sale yet
        client.completions.create(model=sales.model, prompt="Hi", max_tokens=2)
    with served.client(acme.key) as http:
        adapter_listing = http.post(
            "/v1/marketplace/listings", json={"model": sales.version_id, "components": price}
        )
        assert adapter_listing.status_code == 201, adapter_listing.text
    reply = client.completions.create(model=sales.model, prompt=[5, 17, 42], max_tokens=4, temperature=0)
    assert reply.model == sales.model and reply.usage is not None
    bought = {m.id: m for m in client.models.list() if m.id.startswith("ft:")}  # only the one for sale
    assert list(bought) == [sales.model] and bought[sales.model].owned_by == acme.org_id
    with served.client(buyer.key) as http:
        events = http.get("/v1/usage", params={"granularity": "event", "limit": 100}).json()["data"]
    assert [e["model"] for e in events if e["unit"] == "requests"] == [sales.version_id]
