"""OpenAI's fine-tuning jobs, driven by the official `openai` SDK against a real server and worker:
a tiny random Llama imported, chat files uploaded, `fine_tuning.jobs.create` with OpenAI's
`method` shape, the job run as a `fine_tune` job to `succeeded`, and the adapter registered as a
model version in peft's layout with its lineage; and the requests refused before anything is
queued, each naming its field."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from safetensors import safe_open

from openmaas import Client
from openmaas.engine.testing import build_tiny_model
from openmaas.training.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from tests.integration.jobs.harness import fast_server, worker_running
from tests.support.served import Served, Tenant
from tests.unit.training.test_lora import ANSWERS, chat


def _jsonl(rows: list[list[dict[str, Any]]]) -> bytes:
    return b"".join(json.dumps({"messages": m}).encode() + b"\n" for m in rows)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("ft")
    with fast_server(home / "home", f"sqlite:///{home / 'openmaas.db'}") as served:
        yield served


@pytest.fixture(scope="module")
def acme(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Tenant:
    tenant = served.tenant("acme")
    folder = build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny", "llama", max_position_embeddings=64)
    with Client(served.url, tenant.key) as client:
        client.import_model(folder, "tiny")
    return tenant


def _client(served: Served, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=tenant.key, max_retries=0)


def test_a_fine_tuning_job_trains_and_registers_an_adapter(served: Served, acme: Tenant) -> None:
    client = _client(served, acme)
    with served.admin() as admin:  # the operator prices fine-tuning: 10.00 per 1K trained tokens
        prices = {"components": [{"unit": "trained_tokens", "price": "10"}]}
        book = admin.post("/v1/admin/pricebooks", json=prices)
        assert book.status_code == 201, book.text
    train = client.files.create(
        file=("train.jsonl", io.BytesIO(_jsonl([chat(t, k) for t in ANSWERS for k in range(12)]))),
        purpose="fine-tune",
    )
    valid = client.files.create(
        file=("valid.jsonl", _jsonl([chat(t, k) for t in ANSWERS for k in range(50, 53)])),
        purpose="fine-tune",
    )
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train.id,
        validation_file=valid.id,
        suffix="support",
        seed=7,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 2}
            },
        },
    )
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert (job.status, job.model, job.seed, job.training_file) == ("queued", "tiny:1", 7, train.id)
    assert job.hyperparameters.n_epochs == 2 and job.fine_tuned_model is None
    estimated = (job.model_extra or {})["estimated_tokens"]  # the file's tokens, counted at creation
    assert estimated > 0
    assert [j.id for j in client.fine_tuning.jobs.list()] == [job.id]

    with worker_running(served.platform):
        deadline = time.monotonic() + 120
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny:acme:support:{job.id}"
    # Only the answers are trained and billed: within the bound the estimate gave before training.
    assert job.trained_tokens and 0 < job.trained_tokens < 2 * estimated and job.finished_at

    assert len(job.result_files) == 1
    results = client.files.retrieve(job.result_files[0])
    assert (results.purpose, results.filename) == ("fine-tune-results", "step_metrics.csv")
    table = client.files.content(results.id).text.splitlines()
    assert table[0] == "step,epoch,train_loss,valid_loss" and len(table) == 1 + 12
    assert table[6].startswith("6,1,") and table[6].split(",")[3] != ""  # epoch 1's validation loss
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=5))  # the SDK follows `after`
    assert events[0].message.startswith("Fine-tuned model") and len({e.id for e in events}) == len(events)
    steps = [e for e in events if e.type == "metrics" and e.data and "total_steps" in e.data]
    assert [e.data["step"] for e in steps] == list(range(12, 0, -1))  # type: ignore[index]
    assert steps[0].message.startswith("Step 12/12: training loss=")
    assert any(e.type == "metrics" and e.data and "full_valid_loss" in e.data for e in events)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [12, 6]
    assert checkpoints[0].metrics.full_valid_loss is not None
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-12"

    _billed_once_per_trained_token(served, acme, job.id, job.trained_tokens, book.json()["id"])

    with Client(served.url, acme.key) as ours:
        version = ours.registry.version("tiny-support:1")
    assert version.lineage.job_id == job.id and version.lineage.parent_version_id is not None
    assert version.manifest and version.manifest["base"] == "tiny:1"
    with served.client(acme.key) as http:  # served through its base's deployment, never its own
        refused = http.post("/v1/deployments", json={"model": "tiny-support:1"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, "adapter_not_deployable")
    folder = served.platform.store.path(served.platform.store.model_dir(acme.org_id, version.id))
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8
    with safe_open(folder / ADAPTER_WEIGHTS, "pt") as weights:
        assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in weights.keys()  # noqa: SIM118 - safe_open has no __contains__


def _billed_once_per_trained_token(
    served: Served, tenant: Tenant, job_id: str, tokens: int, book: str
) -> None:
    """The job's trained tokens: one usage line with its own unit, summed once in `/v1/usage`, and
    a line of the month's invoice at the pricebook's price (10.00 per 1K: a cent a token)."""
    with served.client(tenant.key) as http:
        events = http.get("/v1/usage", params={"granularity": "event", "limit": 100}).json()["data"]
        trained = [e for e in events if e["unit"] == "trained_tokens"]
        assert [(e["request_id"], e["quantity"], e["model"]) for e in trained] == [
            (f"{job_id}:trained_tokens", tokens, "tiny:1")
        ]
        totals = {row["unit"]: row["quantity"] for row in http.get("/v1/usage").json()["data"]}
        assert totals["trained_tokens"] == tokens
        invoice = http.get(f"/v1/invoices/{time.strftime('%Y-%m', time.gmtime())}").json()
    lines = [(li["unit"], li["quantity"], li["amount"]) for li in invoice["lines"] if li["price_ref"] == book]
    assert ("trained_tokens", tokens, f"{tokens / 100:.2f}") in lines
    # and its compute, by the second (unpriced in this pricebook: 0.00)
    others = [(unit, amount) for unit, _, amount in lines if unit != "trained_tokens"]
    assert others == [("compute_ms", "0.00")]


def test_an_adapter_is_not_deployed_on_its_own(served: Served, acme: Tenant) -> None:
    """A fine-tuning job's adapter version is refused by `POST /v1/deployments`, naming `model`
    (adapters are served through their base model's deployment)."""
    from openmaas.ids import new_id
    from openmaas.registry import service as registry

    platform = served.platform
    with platform.db.session() as session:  # the version a fine-tuning job registers (no artifact)
        registry.register_version(
            session, version_id=new_id("mv_"), org_id=acme.org_id, model_name="tiny-adapter",
            artifact_path="none", manifest={"format_version": 1, "task": "text-generation",
            "source": "lora-adapter", "base": "tiny:1"}, lineage={}, now=platform.clock.now(),
        )  # fmt: skip
    with served.client(acme.key) as http:
        response = http.post("/v1/deployments", json={"model": "tiny-adapter:1"})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("model", "adapter_not_deployable")
        assert "served through their base model's deployment" in error["message"]
        assert "adapter of tiny:1" in error["message"]
        assert http.get("/v1/deployments").json()["data"] == []


def test_bad_requests_name_their_field(served: Served, acme: Tenant) -> None:
    client = _client(served, acme)
    good = client.files.create(
        file=("t.jsonl", _jsonl([chat("fox", k) for k in range(10)])), purpose="fine-tune"
    )
    batch = client.files.create(file=("b.jsonl", b'{"custom_id": "1"}\n'), purpose="batch")
    rows = [chat("fox", k) for k in range(10)]
    rows[6][0]["content"] = "a very long question " * 30
    too_long = client.files.create(file=("long.jsonl", _jsonl(rows)), purpose="fine-tune")
    other_file = _client(served, served.tenant("globex")).files.create(
        file=("g.jsonl", _jsonl([chat("dog", k) for k in range(10)])), purpose="fine-tune"
    )
    from openmaas.ids import new_id
    from openmaas.registry import service as registry

    platform = served.platform
    globex = served.tenant("globex-models")
    with platform.db.session() as session:  # a version that is no text-generation model
        registry.register_version(
            session, version_id=new_id("mv_"), org_id=acme.org_id, model_name="churn", artifact_path="none",
            manifest={"format_version": 1, "task": "tabular-classification"}, lineage={},
            now=platform.clock.now(),
        )  # fmt: skip
        registry.register_version(  # another organisation's text-generation model
            session, version_id=new_id("mv_"), org_id=globex.org_id,
            model_name="theirs", artifact_path="none", manifest={"format_version": 1,
            "task": "text-generation", "source": "huggingface"}, lineage={}, now=platform.clock.now(),
        )  # fmt: skip
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"model": "churn", "training_file": good.id}, openai.BadRequestError, "model"),
        ({"model": "nothing", "training_file": good.id}, openai.NotFoundError, "model"),
        ({"model": "theirs", "training_file": good.id}, openai.NotFoundError, "model"),
        ({"model": "tiny", "training_file": other_file.id}, openai.NotFoundError, "training_file"),
        ({"model": "tiny", "training_file": good.id, "validation_file": "file-nope"}, openai.NotFoundError,
         "validation_file"),
        ({"model": "tiny", "training_file": batch.id}, openai.BadRequestError, "training_file"),
        ({"model": "tiny", "training_file": too_long.id}, openai.BadRequestError, "training_file"),
        ({"model": "tiny", "training_file": good.id, "suffix": "a:b"}, openai.UnprocessableEntityError,
         "suffix"),
        ({"model": "tiny", "training_file": good.id, "hyperparameters": {"n_epochs": 0}},
         openai.UnprocessableEntityError, "hyperparameters.n_epochs"),
        ({"model": "tiny", "training_file": good.id, "method": {"type": "supervised", "supervised": {
            "hyperparameters": {"lora_target_modules": ["embed_tokens"]}}}}, openai.UnprocessableEntityError,
         "method.supervised.hyperparameters.lora_target_modules.0"),
    ]  # fmt: skip
    for body, error, param in cases:
        with pytest.raises(error) as refused:
            client.fine_tuning.jobs.create(**body)
        assert refused.value.body["param"] == param, (body, refused.value.body)  # type: ignore[attr-defined,index]
    with pytest.raises(openai.BadRequestError) as long_refused:
        client.fine_tuning.jobs.create(model="tiny", training_file=too_long.id)
    assert [i["line"] for i in long_refused.value.body["issues"]] == [7]  # type: ignore[index]
    assert all(j.status != "queued" or j.training_file == good.id for j in client.fine_tuning.jobs.list())
    with pytest.raises(openai.NotFoundError):
        _client(served, served.tenant("initech")).fine_tuning.jobs.retrieve("ftjob-nope")


def test_pause_resume_cancel_with_the_sdk_and_the_cli(served: Served, acme: Tenant, tmp_path: Path) -> None:
    from tests.e2e.test_cli import Cli

    client = _client(served, acme)
    train = client.files.create(
        file=("t.jsonl", _jsonl([chat("dog", k) for k in range(10)])), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=train.id, hyperparameters={"n_epochs": 1}
    )
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.NotFoundError):
        _client(served, served.tenant("hooli")).fine_tuning.jobs.cancel(job.id)

    cli = Cli(served, tmp_path)
    created = cli.json(
        "fine-tune", "create", "--model", "tiny", "--training-file", train.id, "--suffix", "cli",
        "--n-epochs", "2", "--batch-size", "auto", key=acme.key,
    )  # fmt: skip
    assert isinstance(created, dict) and created["status"] == "queued"
    assert created["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
    }
    assert cli.json("fine-tune", "pause", created["id"], key=acme.key)["status"] == "paused"  # type: ignore[index]
    assert cli.json("fine-tune", "cancel", created["id"], key=acme.key)["status"] == "cancelled"  # type: ignore[index]
    assert created["id"] in cli("fine-tune", "list", key=acme.key).stdout
    events = cli.json("fine-tune", "events", created["id"], key=acme.key)
    assert isinstance(events, list) and events and all(e["object"] == "fine_tuning.job.event" for e in events)
    refused = cli(
        "fine-tune", "create", "--model", "tiny", "--training-file", "file-nope", key=acme.key, check=False
    )
    assert refused.returncode == 1 and "training_file" in refused.stdout + refused.stderr
