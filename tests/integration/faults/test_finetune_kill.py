"""A fine-tuning job whose worker is killed with SIGKILL mid-training loses nothing: once its lease
expires a second worker takes the job over, resumes from the last epoch checkpoint the killed one
saved (its events say so, and no epoch before it is trained again), and succeeds with one adapter
version, one checkpoint per epoch and its trained tokens billed once.

The worker runs in a process group of its own, so that the SIGKILL reaches its job process too, as
when a machine dies."""

from __future__ import annotations

import io
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from openmaas import Client
from openmaas.engine.testing import build_tiny_model
from tests.integration.jobs.harness import fast_server, job_in, killable_worker, wait_for
from tests.support.served import Served
from tests.unit.training.test_lora import ANSWERS, chat

LEASE_S = 3.0
EPOCHS = 6


@pytest.fixture
def served_fast(tmp_path: Path, database_url: str) -> Iterator[Served]:
    with fast_server(tmp_path / "home", database_url, job_lease_s=LEASE_S) as served:
        yield served


def _events(api: Any, job_id: str) -> list[dict[str, Any]]:
    body: dict[str, Any] = api.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()
    return list(body["data"])


def _epochs_ended(events: list[dict[str, Any]]) -> list[int]:
    """The epochs whose end was reported (each epoch's last report carries its duration)."""
    return [e["data"]["epoch"] for e in events if e["type"] == "metrics" and "seconds" in e["data"]]


def test_sigkilled_worker_fine_tune_resumes_from_its_epoch_checkpoint(
    served_fast: Served, tmp_path: Path
) -> None:
    tenant = served_fast.tenant("acme")
    folder = build_tiny_model(tmp_path / "tiny", "llama", max_position_embeddings=64)
    with Client(served_fast.url, tenant.key) as ours:
        ours.import_model(folder, "tiny")
    client = openai.OpenAI(base_url=f"{served_fast.url}/v1", api_key=tenant.key, max_retries=0)
    examples = [chat(t, k) for t in ANSWERS for k in range(12)]
    lines = b"".join(json.dumps({"messages": m}).encode() + b"\n" for m in examples)
    train = client.files.create(
        file=("train.jsonl", io.BytesIO(lines)),
        purpose="fine-tune",
    )
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train.id,
        suffix="kill",
        seed=3,
        hyperparameters={"n_epochs": EPOCHS, "batch_size": 8},
    )
    with served_fast.client(tenant.key) as api:
        with killable_worker(served_fast, tmp_path / "worker-a.log", LEASE_S) as a:

            def checkpointed() -> bool:
                return any(e["type"] == "checkpoint" for e in _events(api, job.id))

            wait_for(checkpointed, timeout=240, every=0.05)
            os.killpg(a.pid, signal.SIGKILL)
            a.wait(timeout=10)
        saved = [e["data"]["epoch"] for e in _events(api, job.id) if e["type"] == "checkpoint"]
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # its lease has not expired

        with killable_worker(served_fast, tmp_path / "worker-b.log", LEASE_S):
            done = job_in(api, f"/v1/jobs/{job.id}", {"succeeded", "failed"}, timeout=240)
        events = _events(api, job.id)
        usage = api.get("/v1/usage", params={"granularity": "event", "limit": 100}).json()["data"]
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    resumed = done["result"]["resumed_from_epoch"]
    assert 1 <= resumed <= max(saved)
    said = [e for e in events if "resumed_from_epoch" in (e["data"] or {})]
    assert [e["data"]["resumed_from_epoch"] for e in said] == [resumed]
    # The second attempt trained from the epoch after its checkpoint to the end, nothing before it.
    after = events[events.index(said[0]) :]
    assert _epochs_ended(events).count(1) == 1
    assert _epochs_ended(after) == list(range(resumed + 1, EPOCHS + 1))

    finished = client.fine_tuning.jobs.retrieve(job.id)
    assert finished.fine_tuned_model == f"ft:tiny:acme:kill:{job.id}"
    steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data]
    assert steps == sorted(set(steps), reverse=True) and len(steps) == EPOCHS  # one per epoch, once
    with Client(served_fast.url, tenant.key) as ours:
        assert [v.version for v in ours.registry.versions("tiny-kill").data] == [1]
    trained = [e for e in usage if e["unit"] == "trained_tokens"]
    assert [e["quantity"] for e in trained] == [finished.trained_tokens]
