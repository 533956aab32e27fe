"""The platform path of training, over HTTP on a real server with a real worker: upload,
validation job, training job with events, model version in the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.data.builders import breast_cancer_csv
from tests.integration.jobs.harness import fast_server, job_in, upload, worker_running
from tests.support.served import Served


@pytest.fixture
def served_fast(tmp_path: Path, database_url: str) -> Iterator[Served]:
    with fast_server(tmp_path / "home", database_url) as served:
        yield served


def test_upload_validate_train_register_tabular(served_fast: Served, tmp_path: Path) -> None:
    tenant = served_fast.tenant("acme")
    csv = breast_cancer_csv(tmp_path / "cancer.csv")
    with served_fast.client(tenant.key) as api, worker_running(served_fast.platform):
        created = upload(api, csv, "cancer")
        assert created.status_code == 201, created.text
        dataset = created.json()
        assert dataset["version"] == 1 and dataset["status"] == "validating"
        job_in(api, f"/v1/jobs/{dataset['validation_job_id']}", {"succeeded"})
        ready = api.get("/v1/datasets/cancer").json()
        assert ready["status"] == "ready" and ready["rows"] == 569
        again = upload(api, csv, "cancer")
        assert again.status_code == 200 and again.json()["id"] == dataset["id"]

        body = {
            "task": "tabular-classification",
            "dataset": "cancer",
            "target": "label",
            "params": {"epochs": 3, "hidden_sizes": [32]},
        }
        job = api.post("/v1/training_jobs", json=body)
        assert job.status_code == 201, job.text
        done = job_in(api, f"/v1/training_jobs/{job.json()['id']}", {"succeeded", "failed"})
        assert done["status"] == "succeeded", done
        assert done["result"]["ref"] == "cancer:1"
        events = api.get(f"/v1/training_jobs/{done['id']}/events").json()["data"]
        epochs = [e["data"]["epoch"] for e in events if e["type"] == "metrics"]
        assert epochs == [1, 2, 3]
        version = api.get("/v1/registry/versions/cancer:1").json()
        assert version["lineage"] == {
            "dataset_id": dataset["id"],
            "job_id": done["id"],
            "parent_version_id": None,
        }
        assert version["metrics"]["accuracy"] >= 0.85
        assert version["manifest"]["task"] == "tabular-classification"
        assert [row["epoch"] for row in version["manifest"]["history"]] == [1, 2, 3]  # per-epoch curves

        body = {**body, "params": {"epochs": 1}, "parent": "cancer:1"}
        child = job_in(
            api,
            f"/v1/training_jobs/{api.post('/v1/training_jobs', json=body).json()['id']}",
            {"succeeded", "failed"},
        )
        assert child["result"]["ref"] == "cancer:2", child
        second = api.get("/v1/registry/versions/cancer:2").json()
        assert second["lineage"]["parent_version_id"] == version["id"]
        compared = api.get("/v1/registry/compare", params={"refs": ["cancer:1", "cancer:2"]}).json()
        assert set(compared["metrics"]["accuracy"]) == {"cancer:1", "cancer:2"}


def test_async_sdk_follows_a_training_job_to_a_downloaded_model(served_fast: Served, tmp_path: Path) -> None:
    import asyncio
    import zipfile

    from openmaas import AsyncClient

    tenant = served_fast.tenant("acme")
    csv = breast_cancer_csv(tmp_path / "cancer.csv")

    async def scenario() -> None:
        async with AsyncClient(served_fast.url, tenant.key) as client:
            await client.datasets.upload(csv, name="cancer")
            assert (await client.datasets.wait_validated("cancer", timeout=120)).status == "ready"
            job = await client.training_jobs.create(
                task="tabular-classification", dataset="cancer", target="label", params={"epochs": 2}
            )
            seen = [event.type async for event in client.training_jobs.stream_events(job.id)]
            assert seen.count("metrics") == 2 and "checkpoint" in seen
            done = await client.training_jobs.wait(job.id, timeout=120)
            assert done.status == "succeeded", done.error
            path = await client.registry.download(done.result["ref"], tmp_path / "model.zip")  # type: ignore[index]
            assert "manifest.json" in {Path(n).name for n in zipfile.ZipFile(path).namelist()}

    with worker_running(served_fast.platform):
        asyncio.run(scenario())
