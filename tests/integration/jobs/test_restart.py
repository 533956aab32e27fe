"""Durability: jobs queued on one server start are run after a restart. (A worker killed with
SIGKILL mid-training is in tests/integration/faults/test_worker_kill.py.)"""

from __future__ import annotations

from pathlib import Path

from openmaas.api.app import create_app
from openmaas.bootstrap import build_platform
from tests.data.builders import breast_cancer_csv
from tests.integration.jobs.harness import (
    fast_platform,
    job_in,
    upload,
    worker_running,
)
from tests.support.served import Served
from tests.support.server import running_server


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
