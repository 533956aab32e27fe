"""A GGUF file imported with `openmaas models import FILE.gguf`, deployed and called through the
official `openai` SDK answers as the Hugging Face folder it was converted from; bad files are a 422
naming the file and leave nothing behind."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
from typer.testing import CliRunner

from openmaas.cli.main import app
from openmaas.engine.llm_engine import LLMEngine
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.testing import build_tiny_model, write_gguf
from openmaas.engine.tokenizer import Tokenizer
from tests.support.leftovers import nothing_left
from tests.support.served import Served

ENGINE = {"kv_cache_memory_bytes": 8 * 1024 * 1024, "max_num_seqs": 8, "max_model_len": 256}


def test_a_gguf_file_imports_deploys_and_chats(served: Served, tmp_path: Path) -> None:
    tenant = served.tenant("acme")
    folder = build_tiny_model(
        tmp_path / "tiny-qwen", "qwen2", max_position_embeddings=256, tie_word_embeddings=True
    )
    file = write_gguf(folder, tmp_path / "tiny-q8.gguf", "Q8_0")
    env = {"OPENMAAS_URL": served.url, "OPENMAAS_API_KEY": tenant.key, "OPENMAAS_CONFIG_DIR": str(tmp_path)}
    cli = CliRunner().invoke(app, ["models", "import", str(file), "--name", "qwen-q8", "--json"], env=env)
    assert cli.exit_code == 0, cli.output
    version = json.loads(cli.output)
    assert version["task"] == "text-generation" and version["ref"] == "qwen-q8:1"
    with served.client(tenant.key) as http:
        manifest = http.get("/v1/registry/versions/qwen-q8:1").json()["manifest"]
        assert manifest["source"] == "gguf" and manifest["gguf"]["file_type"] == "Q8_0"
        assert manifest["gguf"]["tensor_types"]["blk.0.attn_q.weight"] == "Q8_0"
        assert manifest["gguf"]["tensor_types"]["output_norm.weight"] == "F32"
        created = http.post("/v1/deployments", json={"model": "qwen-q8", "name": "qwen", "engine": ENGINE})
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 120
        while (state := http.get("/v1/deployments/qwen").json()["state"]) != "ready":
            assert state in ("pending", "loading"), http.get("/v1/deployments/qwen/events").text
            assert time.monotonic() < deadline
            time.sleep(0.1)
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=tenant.key, max_retries=0)
    messages = [{"role": "user", "content": "Hello there"}]
    reply = client.chat.completions.create(model="qwen", messages=messages, max_tokens=10, temperature=0)
    # The prompt is the original chat template over the original tokenizer; the answer, our engine's
    # on the stored version's folder.
    prompt = Tokenizer.from_pretrained(folder).encode_chat(messages)
    assert reply.usage is not None and reply.usage.prompt_tokens == len(prompt)
    stored = served.platform.store.root / "models"
    [gguf_folder] = [p.parent for p in stored.rglob("model.gguf")]
    engine = LLMEngine.from_pretrained(gguf_folder, **ENGINE)
    [[expected]] = engine.generate([prompt], SamplingParams(max_tokens=10, temperature=0.0))
    assert reply.choices[0].message.content == expected.text


def test_bad_files_are_refused_and_nothing_is_left(served: Served, tmp_path: Path) -> None:
    tenant = served.tenant("acme")
    folder = build_tiny_model(tmp_path / "tiny", "llama", with_tokenizer=True)
    good = write_gguf(folder, tmp_path / "tiny.gguf", "F32").read_bytes()
    cases = [
        (b"not a gguf file at all", "invalid_gguf", "not a GGUF file"),
        (good[: len(good) // 3], "invalid_gguf", "not a readable GGUF file"),
        (good.replace(b"llama.", b"gpt9.."), "invalid_gguf", "llama.embedding_length"),
        (
            good.replace(b"\x05" + bytes(7) + b"llama", b"\x05" + bytes(7) + b"bloom", 1),
            "unsupported_model",
            "architecture 'bloom' is not supported",
        ),
    ]
    with served.client(tenant.key) as http, nothing_left(served.platform):
        for content, code, words in cases:
            answer = http.post(
                "/v1/registry/imports", params={"name": "bad", "format": "gguf"}, content=content
            )
            assert answer.status_code == 422, answer.text
            error = answer.json()["error"]
            assert (error["code"], error["param"]) == (code, "file") and words in error["message"], error
        assert http.get("/v1/registry/models/bad").status_code == 404
