"""A really trained adapter served, end to end through the official `openai` SDK: a training file
uploaded, a tiny random Qwen2 fine-tuned on a fixed answer per question (the mapping of the
training tests, in 20 steps of 16 at a high rate: quick, and 100% right when tried), its base
deployed, and `job.fine_tuned_model` answering held-out questions right (greedy exact match >= 90%)
where the base answers none; each epoch's checkpoint is callable by its own id, and answers 404
once the job's artifacts are deleted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from openmaas import Client
from openmaas.engine.testing import build_tiny_model
from openmaas.training.finetune_checkpoints import checkpoint_adapter_path
from tests.e2e.test_cli import Cli
from tests.integration.jobs.harness import fast_server, worker_running
from tests.support.served import Served, Tenant
from tests.unit.training.test_lora import ANSWERS, chat

ENGINE = {"kv_cache_memory_bytes": 4 * 1024 * 1024, "max_num_seqs": 8, "max_model_len": 128, "max_loras": 2}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("tuned")
    with fast_server(home / "home", f"sqlite:///{home / 'openmaas.db'}") as served:
        yield served


def _jsonl(rows: list[list[dict[str, Any]]]) -> bytes:
    return b"".join(json.dumps({"messages": m}).encode() + b"\n" for m in rows)


def _exact_match(client: openai.OpenAI, model: str, held_out: list[list[dict[str, Any]]]) -> float:
    hits = 0
    for messages in held_out:
        reply = client.chat.completions.create(
            model=model,
            messages=messages[:1],
            max_tokens=8,
            temperature=0,
        )
        hits += reply.choices[0].message.content == messages[1]["content"]
    return hits / len(held_out)


@pytest.mark.timeout(600)  # a real job's 20 steps: 280 s at a load average of 20-28 on 2 cores
def test_a_fine_tuned_adapter_answers_what_it_learned(
    served: Served, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    acme: Tenant = served.tenant("acme")
    base = build_tiny_model(tmp_path_factory.mktemp("qwen") / "tiny", "qwen2", max_position_embeddings=128)
    with Client(served.url, acme.key) as ours:
        ours.import_model(base, "tiny")
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=acme.key, max_retries=0)
    train = client.files.create(
        file=("train.jsonl", _jsonl([chat(t, k) for t in ANSWERS for k in range(16)])), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=train.id, suffix="facts", seed=0,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 5, "batch_size": 16, "learning_rate_multiplier": 40}}},
    )  # fmt: skip
    with worker_running(served.platform):
        deadline = time.monotonic() + 300
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
    assert job.status == "succeeded" and job.fine_tuned_model, job.error

    with served.client(acme.key) as http:
        created = http.post("/v1/deployments", json={"model": "tiny", "name": "tiny", "engine": ENGINE})
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 120
        while (state := http.get("/v1/deployments/tiny").json()["state"]) != "ready":
            assert state in ("pending", "loading") and time.monotonic() < deadline, state
            time.sleep(0.1)

    held_out = [chat(t, k) for t in ANSWERS for k in range(100, 105)]
    assert _exact_match(client, job.fine_tuned_model, held_out) >= 0.9
    assert _exact_match(client, "tiny", held_out) <= 0.1
    assert job.fine_tuned_model in {m.id for m in client.models.list()}

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [20, 16, 12, 8, 4]
    last, first = checkpoints[0].fine_tuned_model_checkpoint, checkpoints[-1].fine_tuned_model_checkpoint
    assert _exact_match(client, last, held_out[:8]) >= 0.9  # the last epoch's weights: the adapter's
    reply = client.chat.completions.create(
        model=first,
        messages=held_out[0][:1],
        max_tokens=8,
        temperature=0,
    )
    assert reply.model == first and reply.usage is not None

    cli = Cli(served, tmp_path)  # the CLI shows the job and its checkpoints' model ids
    shown = cli.json("fine-tune", "show", job.id, key=acme.key)
    assert isinstance(shown, dict) and shown["fine_tuned_model"] == job.fine_tuned_model
    listed = cli.json("fine-tune", "checkpoints", job.id, key=acme.key)
    assert isinstance(listed, list) and [c["fine_tuned_model_checkpoint"] for c in listed] == [
        c.fine_tuned_model_checkpoint for c in checkpoints
    ]

    store = served.platform.store  # the job's artifacts deleted: its checkpoints are no models any more
    assert store.listdir(checkpoint_adapter_path(store, job.id, 8))
    store.remove(store.job_dir(job.id))
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model=checkpoints[-2].fine_tuned_model_checkpoint,
            messages=held_out[0][:1],
        )
    assert missing.value.code == "model_not_found"
