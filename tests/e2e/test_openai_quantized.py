"""A deployment with `engine: {"quantization": "int8" | "int4"}` served end to end through the OpenAI
API (chat, streamed and not): it answers what an engine quantised the same way answers, and a bad
quantisation setting is refused with a 422 naming it."""

from __future__ import annotations

from pathlib import Path

import openai

from openmaas.engine.llm_engine import LLMEngine
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.testing import build_tiny_model
from openmaas.engine.tokenizer import Tokenizer
from tests.e2e.test_openai_sdk import ENGINE, _deploy
from tests.support.served import Served

MESSAGES = [{"role": "user", "content": "Tell me about foxes"}]


def test_quantised_deployments_answer_chat_streamed_and_not(served: Served, tmp_path: Path) -> None:
    tenant = served.tenant("acme")
    folder = build_tiny_model(
        tmp_path / "qwen", "qwen2", max_position_embeddings=256, tie_word_embeddings=True
    )
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=tenant.key, max_retries=0)
    prompt_ids = Tokenizer.from_pretrained(folder).encode_chat(MESSAGES)
    for fmt in ("int8", "int4"):
        name = f"chat-{fmt}"
        _deploy(served, tenant, folder, name, {**ENGINE, "quantization": fmt})
        reference = LLMEngine.from_pretrained(folder, **ENGINE, quantization=fmt)
        expected = reference.generate([prompt_ids], SamplingParams(max_tokens=12, temperature=0.0))[0][0].text
        reply = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=12, temperature=0)
        assert reply.choices[0].message.content == expected
        chunks = client.chat.completions.create(
            model=name, messages=MESSAGES, max_tokens=12, temperature=0, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected

    with served.client(tenant.key) as http:
        for engine, param in (
            ({"quantization": "int3"}, "engine.quantization"),
            ({"quantization": 8}, "engine.quantization"),
            ({"quantization": "int4", "quantization_group_size": 48}, "engine.quantization_group_size"),
        ):
            refused = http.post(
                "/v1/deployments", json={"model": "chat-int8", "name": "bad", "engine": engine}
            )
            error = refused.json()["error"]
            assert (refused.status_code, error["param"]) == (422, param), refused.text
        assert http.get("/v1/deployments/bad").status_code == 404  # nothing left behind
