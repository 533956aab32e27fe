"""Durability: a worker killed with SIGKILL mid-training loses nothing — another worker takes
the job over once the lease expires and resumes from the last checkpoint; and jobs queued on one
server start are run after a restart."""

from __future__ import annotations

import csv
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from openmaas.api.app import create_app
from openmaas.bootstrap import build_platform
from openmaas.training.artifact import load_artifact
from openmaas.training.predictor import ClassPrediction
from tests.data.builders import breast_cancer_csv
from tests.integration.jobs.harness import (
    fast_platform,
    fast_server,
    fast_worker_env,
    job_in,
    upload,
    wait_for,
    worker_running,
)
from tests.support.served import Served
from tests.support.server import running_server
from tests.support.workers import start_worker

LEASE_S = 5.0
EPOCHS = 120  # long enough that the kill always lands mid-training, even on an idle machine


@contextmanager
def worker_process(served: Served, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start_worker(
        served.platform.settings,
        log,
        fast_worker_env(LEASE_S),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
def served_fast(tmp_path: Path, database_url: str) -> Iterator[Served]:
    with fast_server(tmp_path / "home", database_url, job_lease_s=LEASE_S) as served:
        yield served


def _events(api: Any, job_id: str) -> list[dict[str, Any]]:
    body: dict[str, Any] = api.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()
    return list(body["data"])


def test_sigkilled_worker_job_resumes_from_checkpoint_elsewhere(served_fast: Served, tmp_path: Path) -> None:
    tenant = served_fast.tenant("acme")
    data = breast_cancer_csv(tmp_path / "cancer.csv")
    with served_fast.client(tenant.key) as api:
        with worker_process(served_fast, tmp_path / "worker-a.log") as first:
            dataset = upload(api, data, "cancer").json()
            # Generous: a fresh worker process first loads torch and the trainers into its forkserver.
            job_in(api, f"/v1/jobs/{dataset['validation_job_id']}", {"succeeded"}, timeout=240)
            # A checkpoint every epoch: the default schedule may save only at the end of so short a run.
            params = {"epochs": EPOCHS, "batch_size": 8, "hidden_sizes": [128], "checkpoint_overhead": 0}
            body = {
                "task": "tabular-classification",
                "dataset": "cancer",
                "target": "label",
                "params": params,
            }
            job_id = api.post("/v1/training_jobs", json=body).json()["id"]

            def checkpointed() -> bool:
                return any(
                    e["type"] == "checkpoint" and e["data"]["epoch"] >= 2 for e in _events(api, job_id)
                )

            wait_for(checkpointed, timeout=90, every=0.1)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            saved = [e["data"]["epoch"] for e in _events(api, job_id) if e["type"] == "checkpoint"]
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # its lease has not expired yet

        with worker_process(served_fast, tmp_path / "worker-b.log"):
            done = job_in(api, f"/v1/training_jobs/{job_id}", {"succeeded", "failed"}, timeout=240)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        resumed = done["result"]["resumed_from_epoch"]
        assert resumed >= 2  # not from epoch 0
        assert resumed <= max(saved) + 1  # the killed worker's job process died with it
        epochs = [e["data"]["epoch"] for e in _events(api, job_id) if e["type"] == "metrics"]
        assert epochs.count(1) == 1 and max(epochs) == EPOCHS

        versions = api.get("/v1/registry/models/cancer/versions").json()["data"]
        assert [v["version"] for v in versions] == [1]  # the killed attempt registered nothing
    version_path = served_fast.platform.store.path(f"models/{tenant.org_id}/{versions[0]['id']}")
    predictor = load_artifact(version_path)
    with open(data) as handle:
        rows = [dict(row) for row, _ in zip(csv.DictReader(handle), range(5), strict=False)]
    labels = [row.pop("label") for row in rows]
    predictions = predictor.predict([{k: float(v) for k, v in row.items()} for row in rows])
    assert all(isinstance(p, ClassPrediction) and p.label in {"benign", "malignant"} for p in predictions)
    assert len(labels) == len(predictions)


def test_jobs_queued_before_a_restart_run_after_it(tmp_path: Path, database_url: str) -> None:
    home = tmp_path / "home"
    platform = fast_platform(home, database_url)
    assert platform.new_admin_key is not None
    with running_server(create_app(platform)) as url:
        served = Served(url, platform, platform.new_admin_key)
        tenant = served.tenant("acme")
        with served.client(tenant.key) as api:
            dataset = upload(api, breast_cancer_csv(tmp_path / "cancer.csv"), "cancer").json()
    platform.close()

    restarted = build_platform(platform.settings)  # same home, database and secret: a restart
    with (
        running_server(create_app(restarted)) as url,
        worker_running(restarted),
        Served(url, restarted, "").client(tenant.key) as api,
    ):
        job = job_in(api, f"/v1/jobs/{dataset['validation_job_id']}", {"succeeded"}, timeout=60)
        assert job["result"]["ok"] is True
        assert api.get(f"/v1/datasets/{dataset['id']}").json()["status"] == "ready"
    restarted.close()
