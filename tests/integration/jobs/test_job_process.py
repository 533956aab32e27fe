"""`python -m openmaas.job_process`, the entry point other executors start with the `RunSpec` JSON
on stdin: it runs the claimed attempt with the platform's handlers and store, as a forked job
process does."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from openmaas.jobs import queue
from openmaas.jobs.executor import RunSpec
from tests.data.builders import breast_cancer_csv
from tests.integration.jobs.harness import fast_server, job_in, upload


def test_a_job_process_started_with_its_spec_on_stdin_runs_the_attempt(
    tmp_path: Path, database_url: str
) -> None:
    with fast_server(tmp_path / "home", database_url) as served:
        platform = served.platform
        tenant = served.tenant("acme")
        with served.client(tenant.key) as api:
            dataset = upload(api, breast_cancer_csv(tmp_path / "cancer.csv"), "cancer", target="label").json()
            with platform.db.session() as session:
                claim = queue.claim_next(
                    session, owner="test", now=platform.clock.now(), lease=timedelta(seconds=60), org_limit=5
                )
            assert claim is not None and claim.job_id == dataset["validation_job_id"]
            spec = RunSpec(
                claim=claim,
                database_url=platform.db.url,
                storage_url=platform.settings.resolved_storage_url,
                worker_pid=os.getpid(),
            )
            done = subprocess.run(
                [sys.executable, "-m", "openmaas.job_process"],
                input=spec.model_dump_json().encode(),
                capture_output=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            job = job_in(api, f"/v1/jobs/{claim.job_id}", {"succeeded", "failed"}, timeout=10)
            assert job["status"] == "succeeded" and job["result"]["ok"] is True
            assert api.get(f"/v1/datasets/{dataset['id']}").json()["status"] == "ready"
