"""Optimisation jobs on the platform path: a tiny churn MLP trained by a real job, optimised with
every method into new versions whose manifests hold measured numbers side by side with the
parent; an ONNX version deployed and predicting what its parent predicts; the metric-drop refusal
(nothing registered) and `force`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from openmaas import Client
from openmaas.api.app import create_app
from openmaas.cli.main import app
from tests.integration.jobs.harness import fast_platform, job_in, upload, worker_running
from tests.integration.serving.predict_support import churn_frame
from tests.support.served import Served
from tests.support.server import running_server

ROWS = [{"age": 75.0, "plan": "basic", "noise": 0.3}, {"age": 19, "plan": "pro", "noise": None}]
METHODS = ("onnx-fp32", "dynamic-int8", "static-int8", "prune-30")


@pytest.fixture
def served_fast(tmp_path: Path, database_url: str) -> Iterator[Served]:
    platform = fast_platform(tmp_path / "home", database_url)
    assert platform.new_admin_key is not None
    with running_server(create_app(platform)) as url:
        yield Served(url, platform, platform.new_admin_key)
    platform.close()


def _trained(api: httpx.Client, tmp_path: Path) -> None:
    csv = tmp_path / "churn.csv"
    churn_frame().to_csv(csv, index=False)
    dataset = upload(api, csv, "churn").json()
    job_in(api, f"/v1/jobs/{dataset['validation_job_id']}", {"succeeded"})
    body = {
        "task": "tabular-classification",
        "dataset": "churn",
        "target": "label",
        "params": {"epochs": 15, "hidden_sizes": [16], "learning_rate": 0.02},
    }
    job = api.post("/v1/training_jobs", json=body).json()
    done = job_in(api, f"/v1/training_jobs/{job['id']}", {"succeeded", "failed"})
    assert done["result"]["ref"] == "churn:1", done


def _optimize(api: httpx.Client, **body: Any) -> dict[str, Any]:
    created = api.post("/v1/optimizations", json={"model": "churn:1", **body})
    assert created.status_code == 201, created.text
    return created.json()


def _finished(api: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    return job_in(api, f"/v1/optimizations/{job['id']}", {"succeeded", "failed"}, timeout=240)


def test_each_method_registers_a_measured_version_and_onnx_deploys(
    served_fast: Served, tmp_path: Path
) -> None:
    tenant = served_fast.tenant("acme")
    with served_fast.client(tenant.key) as api, worker_running(served_fast.platform):
        _trained(api, tmp_path)
        jobs = {method: _optimize(api, method=method, max_metric_drop=0.05) for method in METHODS}
        done = {method: _finished(api, job) for method, job in jobs.items()}
        for method, job in done.items():
            assert job["status"] == "succeeded", (method, job["error"])
            version = api.get(f"/v1/registry/versions/{job['result']['ref']}").json()
            assert (
                version["lineage"]["parent_version_id"]
                == api.get("/v1/registry/versions/churn:1").json()["id"]
            )
            opt = version["manifest"]["optimization"]
            assert opt["method"] == method and opt["parent"]["ref"] == "churn:1"
            for side in ("parent", "result"):
                assert opt[side]["size"]["bytes"] > 0
                assert set(opt[side]["latency_ms"]) == {"p50_batch_1", "p50_batch_32"}
                assert all(v > 0 for v in opt[side]["latency_ms"].values())
            change = opt["metric_change"]
            assert change["metric"] == "accuracy" and change["drop"] <= 0.05
            assert version["metrics"]["accuracy"] == pytest.approx(change["result"])
        events = api.get(f"/v1/optimizations/{jobs['static-int8']['id']}/events").json()["data"]
        stages = [e["data"]["stage"] for e in events if e["type"] == "progress"]
        assert stages[:2] == ["prepare", "measure-parent"] and "calibrate" in stages and "quantize" in stages
        pruned = api.get(f"/v1/registry/versions/{done['prune-30']['result']['ref']}").json()["manifest"]
        assert pruned["optimization"]["pruning"]["sparsity"] >= 0.29
        assert "runtime" not in pruned

        onnx_ref = done["dynamic-int8"]["result"]["ref"]
        with Client(served_fast.url, tenant.key) as client:
            for ref, name in (("churn:1", "parent"), (onnx_ref, "int8")):
                client.deployments.create(ref, name=name)
                client.deployments.wait_ready(name, timeout=60)
        answers = {
            name: api.post(f"/v1/deployments/{name}/predict", json={"inputs": ROWS}).json()["predictions"]
            for name in ("parent", "int8")
        }
        for parent, optimised in zip(answers["parent"], answers["int8"], strict=True):
            assert optimised["label"] == parent["label"]
            for label, p in parent["probabilities"].items():
                assert optimised["probabilities"][label] == pytest.approx(p, abs=0.05)
        bad = api.post(
            "/v1/deployments/int8/predict", json={"inputs": [{"age": "old", "plan": "pro", "noise": 1}]}
        )
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "inputs.0.age"


def test_a_metric_drop_is_refused_unless_forced(served_fast: Served, tmp_path: Path) -> None:
    tenant = served_fast.tenant("acme")
    with served_fast.client(tenant.key) as api, worker_running(served_fast.platform):
        _trained(api, tmp_path)
        body = {"model": "churn:1", "method": "prune-95", "max_metric_drop": 0.0}
        first = api.post("/v1/optimizations", json=body, headers={"Idempotency-Key": "opt-1"})
        again = api.post("/v1/optimizations", json=body, headers={"Idempotency-Key": "opt-1"})
        assert first.status_code == 201 and again.json()["id"] == first.json()["id"]
        refused = _finished(api, first.json())
        assert refused["status"] == "failed"
        assert refused["error"]["code"] == "metric_drop", refused["error"]
        assert "no version was registered" in refused["error"]["message"]
        assert api.get("/v1/registry/models/churn").json()["latest_version"] == 1
        models_dir = served_fast.platform.store.root / "models"
        assert len(list(models_dir.rglob("manifest.json"))) == 1  # only the parent's artifact
        env = {"OPENMAAS_URL": served_fast.url, "OPENMAAS_API_KEY": tenant.key, "COLUMNS": "200"}
        env["OPENMAAS_CONFIG_DIR"] = str(tmp_path / "config")
        args = ["optimize", "churn:1", "--method", "prune-95", "--max-metric-drop", "0", "--follow"]
        cli = CliRunner().invoke(app, args, env=env)
        assert (
            cli.exit_code == 1
            and "metric_drop" not in cli.output
            and "no version was registered" in cli.output
        )
        cli = CliRunner().invoke(app, [*args, "--force"], env=env)
        assert cli.exit_code == 0, cli.output
        assert "Succeeded" in cli.output and "latency p50_batch_32" in cli.output and "churn:2" in cli.output
        manifest = api.get("/v1/registry/versions/churn:2").json()["manifest"]
        assert manifest["optimization"]["metric_change"]["forced"] is True
        assert any("force=true" in note for note in manifest["optimization"]["notes"])


def test_bad_requests_are_4xx_naming_the_field(served_fast: Served) -> None:
    tenant = served_fast.tenant("acme")
    other = served_fast.tenant("other")
    with served_fast.client(tenant.key) as api, served_fast.client(other.key) as stranger:
        assert (
            api.post("/v1/optimizations", json={"model": "nope:1", "method": "onnx-fp32"}).status_code == 404
        )
        bad = api.post("/v1/optimizations", json={"model": "nope:1", "method": "int3"})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "method"
        negative = api.post(
            "/v1/optimizations", json={"model": "a:1", "method": "onnx-fp32", "max_metric_drop": -1}
        )
        assert negative.status_code == 422
        assert stranger.get("/v1/optimizations").json()["data"] == []


def test_async_sdk_reaches_the_same_routes(served_fast: Served) -> None:
    import asyncio

    from openmaas import AsyncClient
    from openmaas.sdk.errors import NotFoundError, UnprocessableEntityError

    tenant = served_fast.tenant("acme")

    async def scenario() -> None:
        async with AsyncClient(served_fast.url, tenant.key) as client:
            assert (await client.optimizations.list()).data == []
            with pytest.raises(NotFoundError):
                await client.optimizations.create("nope:1", method="onnx-fp32")
            with pytest.raises(UnprocessableEntityError):
                await client.optimizations.create("nope:1", method="int3")

    asyncio.run(scenario())
