"""`scripts/demo-cluster` end to end, as a new user runs it: start it, train a `workers: 2` job
through one API server, predict through the other, stop it, and nothing of it is left running.

Opt-in (OPENMAAS_TEST_DEMO_CLUSTER=1): it starts PostgreSQL, two Ray nodes, two API servers and a
worker, minutes on this 2-core machine. Needs PostgreSQL's programs (Debian's `postgresql`)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.data.builders import breast_cancer_csv
from tests.integration.jobs.harness import job_in, upload, wait_for

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "demo-cluster"

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        os.environ.get("OPENMAAS_TEST_DEMO_CLUSTER") != "1",
        reason="starts a whole demo cluster (minutes): OPENMAAS_TEST_DEMO_CLUSTER=1 runs it",
    ),
]


def _exports(path: Path) -> dict[str, str]:
    pairs = (shlex.split(line.removeprefix("export "))[0] for line in path.read_text().splitlines() if line)
    return dict(pair.split("=", 1) for pair in pairs)


def _marked(mark: str) -> list[int]:
    """The processes whose environment carries the demo's mark."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.timeout(1200)
def test_demo_cluster_trains_on_one_server_and_predicts_on_the_other(tmp_path: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="omd-", dir="/tmp"))  # short: Ray's socket paths
    env = {
        **os.environ,
        "OPENMAAS_DEMO_DIR": str(directory),
        "OPENMAAS_DEMO_BIN": str(Path(sys.executable).parent),
    }
    mark = ""
    try:
        subprocess.run([str(SCRIPT), "start"], env=env, check=True, timeout=600)
        mark = f"OPENMAAS_DEMO_ID={(directory / 'id').read_text().strip()}"
        urls = _exports(directory / "env")
        admin = {"Authorization": f"Bearer {urls['OPENMAAS_API_KEY']}"}
        with httpx.Client(base_url=urls["OPENMAAS_URL"], headers=admin, timeout=60) as api:
            org = api.post("/v1/admin/organizations", json={"name": "acme"}).json()
            key = api.post(f"/v1/admin/organizations/{org['id']}/api_keys", json={"name": "dev"}).json()[
                "key"
            ]
        tenant = {"Authorization": f"Bearer {key}"}
        csv = breast_cancer_csv(tmp_path / "cancer.csv")
        with httpx.Client(base_url=urls["OPENMAAS_URL"], headers=tenant, timeout=60) as one:
            dataset = upload(one, csv, "cancer").json()
            validated = job_in(one, f"/v1/jobs/{dataset['validation_job_id']}", {"succeeded", "failed"}, 300)
            assert validated["status"] == "succeeded", validated
            body = {"task": "tabular-classification", "dataset": "cancer", "target": "label", "workers": 2}
            job = one.post("/v1/training_jobs", json={**body, "params": {"epochs": 10}}).json()
            done = job_in(one, f"/v1/training_jobs/{job['id']}", {"succeeded", "failed", "cancelled"}, 600)
            assert done["status"] == "succeeded", done
            deployed = one.post("/v1/deployments", json={"model": "cancer", "name": "cancer-api"})
            assert deployed.status_code == 201, deployed.text
        row = pd.read_csv(csv).drop(columns=["label"]).iloc[0].to_dict()
        with httpx.Client(base_url=urls["OPENMAAS_URL_2"], headers=tenant, timeout=60) as two:

            def predicted() -> httpx.Response | None:
                answer = two.post("/v1/deployments/cancer-api/predict", json={"inputs": [row]})
                return answer if answer.status_code == 200 else None

            answer = wait_for(predicted, timeout=120, every=1.0)
        assert answer.json()["predictions"][0]["label"] == "malignant"
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, timeout=300)
    assert not directory.exists()
    assert mark and _marked(mark) == []
