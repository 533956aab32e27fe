"""The artifact store on an S3-compatible service (moto's server, speaking the S3 API on a free
port): a real server and worker upload a dataset, validate it, train a tabular model (checkpoints
and the attempt's log in the bucket), deploy it, predict and delete it with nothing kept on the
local disk but the read cache; and the store's own promises, whole-or-nothing writes and a
bounded cache, on the same bucket."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("s3fs", reason="the S3 store needs the `cluster` extra")
moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (a dev dependency)")

from openmaas.storage import RemoteArtifactStore, open_store  # noqa: E402
from tests.data.builders import breast_cancer_csv  # noqa: E402
from tests.integration.jobs.harness import fast_server, job_in, upload, wait_for, worker_running  # noqa: E402
from tests.support.serve_process import free_port  # noqa: E402

BUCKET = "openmaas-test"

# Credentials for moto (it takes any), set when the file is collected: before any test starts the
# job forkserver, whose job processes see the environment of that moment.
for _name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    os.environ.setdefault(_name, "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's S3 server with a bucket."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    store = open_store(f"s3://{BUCKET}?endpoint_url={url}")
    assert isinstance(store, RemoteArtifactStore)
    store.fs.mkdir(BUCKET)
    try:
        yield url
    finally:
        server.stop()


def _url(endpoint: str, prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}?endpoint_url={endpoint}"


def test_upload_train_deploy_predict_delete_through_s3(endpoint: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    storage_url = _url(endpoint, "platform")
    csv = breast_cancer_csv(tmp_path / "full.csv")
    tiny = tmp_path / "cancer.csv"
    tiny.write_text("".join(csv.read_text().splitlines(keepends=True)[:161]))  # 160 rows
    with fast_server(home, f"sqlite:///{tmp_path / 'openmaas.db'}", storage_url=storage_url) as served:
        bucket = open_store(served.platform.settings.resolved_storage_url)
        tenant = served.tenant("acme")
        with served.client(tenant.key) as api, worker_running(served.platform):
            dataset = upload(api, tiny, "cancer").json()
            validated = job_in(api, f"/v1/jobs/{dataset['validation_job_id']}", {"succeeded", "failed"})
            assert validated["status"] == "succeeded", validated
            assert bucket.listdir(f"datasets/{tenant.org_id}/{dataset['id']}") == ["data.csv"]

            body: dict[str, Any] = {
                "task": "tabular-classification",
                "dataset": "cancer",
                "target": "label",
                "params": {"epochs": 2, "hidden_sizes": [16]},
            }
            created = api.post("/v1/training_jobs", json=body)
            assert created.status_code == 201, created.text
            job = job_in(api, f"/v1/training_jobs/{created.json()['id']}", {"succeeded", "failed"})
            assert job["status"] == "succeeded", job
            checkpoints = bucket.listdir(f"jobs/{job['id']}/checkpoints")
            assert checkpoints and all(name.startswith("checkpoint-") for name in checkpoints)
            # The attempt's log is published when the attempt ends (the worker notices it).
            wait_for(lambda: "attempt-1.log" in bucket.listdir(f"jobs/{job['id']}"), timeout=10)
            version = api.get("/v1/registry/versions/cancer:1").json()
            assert "manifest.json" in bucket.listdir(f"models/{tenant.org_id}/{version['id']}")

            download = api.get("/v1/registry/versions/cancer:1/download")
            assert download.status_code == 200 and b"manifest.json" in download.content

            deployed = api.post("/v1/deployments", json={"model": "cancer:1", "name": "cancer"})
            assert deployed.status_code in (200, 201, 202), deployed.text
            wait_for(lambda: api.get("/v1/deployments/cancer").json()["state"] == "ready", timeout=60)
            row = {k: v for k, v in _first_row(tiny).items() if k != "label"}
            predicted = api.post("/v1/deployments/cancer/predict", json={"inputs": [row]})
            assert predicted.status_code == 200, predicted.text
            assert len(predicted.json()["predictions"]) == 1, predicted.json()

            assert api.delete("/v1/deployments/cancer").status_code == 200
            wait_for(lambda: api.delete("/v1/registry/models/cancer").status_code == 200, timeout=30)
        assert bucket.listdir(f"models/{tenant.org_id}") == []
    # Nothing stored on the local disk: only the read cache (under home) held copies.
    assert not (home / "artifacts").exists()


def _first_row(path: Path) -> dict[str, Any]:
    import pandas as pd

    return dict(pd.read_csv(path, nrows=1).iloc[0].to_dict())


def test_a_failed_write_publishes_nothing_and_the_cache_stays_bounded(endpoint: str, tmp_path: Path) -> None:
    store = open_store(
        _url(endpoint, f"unit-{os.getpid()}-{tmp_path.name}") + f"&cache={tmp_path}&cache_mb=0.001"
    )
    assert isinstance(store, RemoteArtifactStore)
    store.cache.grace_s = 0.0
    with pytest.raises(RuntimeError), store.staged("models/o/mv_1") as folder:
        folder.mkdir()
        (folder / "weights").write_bytes(b"x" * 100)
        raise RuntimeError("killed mid-write")
    assert store.listdir("models/o") == []
    for name in ("a", "b"):
        with store.staged(f"data/{name}.bin") as path:
            path.write_bytes(name.encode() * 800)  # 800 bytes: the cache holds one (1 KiB)
    with store.reading("data/a.bin") as a:
        assert a.read_bytes() == b"a" * 800 and a.name == "a.bin"
    with store.reading("data/b.bin") as b:
        assert b.read_bytes() == b"b" * 800
        assert not a.exists()  # made room: the least recently used went
    assert store.size("data") == 1600 and store.listdir("data") == ["a.bin", "b.bin"]
    store.remove("data")
    assert store.listdir("data") == [] and not b.exists()
    with pytest.raises(FileNotFoundError), store.reading("data/a.bin"):
        pass
