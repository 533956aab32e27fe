"""An optimisation job whose worker is killed with SIGKILL mid-build leaves its staging behind; the
next worker's start removes it once the job is no longer running (its lease expired), and a retried
attempt removes what its killed attempt left before building again. Nothing stays in the store but
registered versions."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from openmaas.registry.tables import ModelVersion
from tests.integration.jobs.harness import (
    fast_server,
    job_in,
    killable_worker,
    upload,
    wait_for,
)
from tests.integration.serving.predict_support import churn_frame
from tests.support.served import Served

LEASE_S = 3.0


@pytest.fixture
def served_fast(tmp_path: Path, database_url: str) -> Iterator[Served]:
    with fast_server(tmp_path / "home", database_url, job_lease_s=LEASE_S) as served:
        yield served


def _kill_mid_build(api: httpx.Client, worker: subprocess.Popen[bytes], job_id: str) -> None:
    def building() -> bool:
        events = api.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
        return any(e["type"] == "progress" and (e["data"] or {}).get("stage") == "export" for e in events)

    wait_for(building, timeout=240, every=0.05)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)


def _leftovers(served: Served, org_id: str) -> list[Path]:
    """Everything an optimisation may write to the store that is not a registered version."""
    store = served.platform.store
    with served.platform.db.read_session() as session:
        registered = set(session.scalars(select(ModelVersion.id)))
    models = store.path(f"models/{org_id}")
    stray = [path for path in models.iterdir() if path.name not in registered] if models.is_dir() else []
    return stray + sorted(store.path("jobs").glob("*/optimize-staging/*"))


def _optimize(api: httpx.Client, max_attempts: int) -> dict[str, Any]:
    body = {"model": "churn:1", "method": "onnx-fp32", "max_metric_drop": 1.0, "max_attempts": max_attempts}
    created = api.post("/v1/optimizations", json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


def test_a_killed_optimisations_staging_goes_at_the_next_start_or_retry(
    served_fast: Served, tmp_path: Path
) -> None:
    tenant = served_fast.tenant("acme")
    csv = tmp_path / "churn.csv"
    churn_frame().to_csv(csv, index=False)
    with served_fast.client(tenant.key) as api:
        with killable_worker(served_fast, tmp_path / "worker-a.log", LEASE_S) as first:
            dataset = upload(api, csv, "churn").json()
            job_in(api, f"/v1/jobs/{dataset['validation_job_id']}", {"succeeded"}, timeout=240)
            body = {
                "task": "tabular-classification",
                "dataset": "churn",
                "target": "label",
                "params": {"epochs": 5},
            }
            trained = api.post("/v1/training_jobs", json=body).json()
            assert job_in(api, f"/v1/jobs/{trained['id']}", {"succeeded", "failed"})["status"] == "succeeded"
            once = _optimize(api, max_attempts=1)
            _kill_mid_build(api, first, once["id"])
        assert _leftovers(served_fast, tenant.org_id) != []  # the kill landed mid-build
        time.sleep(LEASE_S + 0.5)  # the killed worker's lease runs out: the job no longer runs

        with killable_worker(served_fast, tmp_path / "worker-b.log", LEASE_S) as second:
            wait_for(lambda: _leftovers(served_fast, tenant.org_id) == [], timeout=60)
            failed = job_in(api, f"/v1/optimizations/{once['id']}", {"failed", "succeeded"}, timeout=60)
            assert failed["status"] == "failed", failed  # its one attempt was used up
            retried = _optimize(api, max_attempts=2)
            _kill_mid_build(api, second, retried["id"])
        assert _leftovers(served_fast, tenant.org_id) != []

        with killable_worker(served_fast, tmp_path / "worker-c.log", LEASE_S):  # before the lease expires
            done = job_in(api, f"/v1/optimizations/{retried['id']}", {"failed", "succeeded"}, timeout=240)
        assert done["status"] == "succeeded" and done["attempts"] == 2, done
        versions = api.get("/v1/registry/models/churn/versions").json()["data"]
        assert sorted(v["version"] for v in versions) == [1, 2]  # the killed attempt registered nothing
    assert _leftovers(served_fast, tenant.org_id) == []
