"""The training API's rules over HTTP: upload limits and rejections that leave nothing behind,
errors that name the field, datasets that failed validation, jobs waiting for validation, other
organisations' ids, cancelling a running job, SSE event streams and a second task family."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.data.builders import breast_cancer_csv, png_bytes, topic_texts_csv
from tests.integration.jobs.harness import (
    fast_server,
    job_in,
    upload,
    wait_for,
    worker_running,
)
from tests.support.served import Served


@pytest.fixture
def served_fast(tmp_path: Path, database_url: str) -> Iterator[Served]:
    with fast_server(
        tmp_path / "home", database_url, max_body_bytes=16_000, max_dataset_bytes=200_000
    ) as served:
        yield served


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def _stored_datasets(served: Served, org_id: str) -> list[str]:
    folder = served.platform.store.path(f"datasets/{org_id}")
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _train(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post("/v1/training_jobs", json={"task": "tabular-classification", "dataset": "cancer", **body})


def test_uploads_errors_validation_and_isolation(served_fast: Served, tmp_path: Path) -> None:
    acme, other = served_fast.tenant("acme"), served_fast.tenant("other")
    cancer = breast_cancer_csv(tmp_path / "cancer.csv")  # ~120 KB: over the gateway's 16 KB body limit
    big = tmp_path / "big.csv"
    big.write_text("a,b\n" + "1,2\n" * 60_000)
    lying = tmp_path / "lying.csv"
    lying.write_bytes(png_bytes(np.zeros((8, 8))))
    broken = tmp_path / "broken.csv"
    broken.write_text("x,y,label\n1,2,a\n3,4,b,c\n5,6,b\n7,8,a\n")
    with served_fast.client(acme.key) as api, served_fast.client(other.key) as rival:
        assert _error(upload(api, big, "big"), 413)["param"] == "file"
        chunked = api.post("/v1/datasets", params={"name": "big"}, content=iter([big.read_bytes()]))
        assert _error(chunked, 413)["code"] == "payload_too_large"
        assert _error(upload(api, lying, "lying"), 415)["param"] == "file"
        assert _error(upload(api, cancer, "bad name!"), 422)["param"] == "name"
        assert _stored_datasets(served_fast, acme.org_id) == []  # rejected uploads leave nothing behind

        dataset = upload(api, cancer, "cancer").json()
        assert _error(_train(api, task="nope"), 422)["param"] == "task"
        assert _error(_train(api, params={"epochs": 0}), 422)["param"] == "epochs"
        assert _error(_train(api, params={"nope": 1}), 422)["param"] == "params.nope"
        misspelt = _error(_train(api, params={"epoch": 5}), 422)
        assert (misspelt["param"], misspelt["code"]) == ("params.epoch", "unknown_parameter")
        assert "did you mean 'epochs'?" in misspelt["message"] and "hidden_sizes" in misspelt["message"]
        assert _error(_train(api, task="recommendation", target="label"), 422)["param"] == "target"
        assert _error(_train(api, dataset="missing"), 404)["param"] == "dataset"
        waiting = _train(api, target="label", params={"epochs": 2})
        assert waiting.status_code == 201 and waiting.json()["status"] == "validating_files"

        assert rival.get(f"/v1/datasets/{dataset['id']}").status_code == 404
        assert rival.get(f"/v1/jobs/{waiting.json()['id']}").status_code == 404
        assert rival.post(f"/v1/training_jobs/{waiting.json()['id']}/cancel").status_code == 404
        assert (
            rival.post(
                "/v1/training_jobs", json={"task": "tabular-classification", "dataset": "cancer"}
            ).status_code
            == 404
        )

        failed = upload(api, broken, "broken").json()
        with worker_running(served_fast.platform):
            job_in(api, f"/v1/jobs/{failed['validation_job_id']}", {"failed"})
            trained = job_in(api, f"/v1/training_jobs/{waiting.json()['id']}", {"succeeded", "failed"})
        assert trained["status"] == "succeeded", trained
        assert rival.get(f"/v1/registry/versions/{trained['result']['ref']}").status_code == 404
        shown = api.get("/v1/datasets/broken").json()
        assert shown["status"] == "failed"
        first = shown["issues"][0]
        assert (first["code"], first["file"], first["line"]) == ("wrong_field_count", "data.csv", 3)
        refused = _error(_train(api, dataset="broken", target="label"), 409)
        assert refused["param"] == "dataset" and refused["code"] == "dataset_invalid"
        assert _error(_train(api, target="no_such_column"), 422)["param"] == "target"


def _sse(api: httpx.Client, path: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    with api.stream("GET", path, params={"stream": "true"}, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                found.append((kind, json.loads(line.removeprefix("data: "))))
    return found


def test_text_family_streams_events_and_cancel_stops_a_running_job(
    served_fast: Served, tmp_path: Path
) -> None:
    tenant = served_fast.tenant("acme")
    texts = topic_texts_csv(tmp_path / "texts.csv", per_class=40)
    with served_fast.client(tenant.key) as api, worker_running(served_fast.platform):
        upload(api, texts, "topics")
        text_job = api.post(
            "/v1/training_jobs",
            json={
                "task": "text-classification",
                "dataset": "topics",
                "target": "label",
                "params": {"epochs": 2, "architecture": "lstm", "embedding_dim": 16, "hidden_size": 16},
            },
        ).json()
        stream = _sse(api, f"/v1/training_jobs/{text_job['id']}/events")
        assert [data["data"]["epoch"] for kind, data in stream if kind == "metrics"] == [1, 2]
        assert stream[-1] == ("done", {"status": "succeeded"})
        version = api.get("/v1/registry/versions/topics:1").json()
        assert version["task"] == "text-classification" and "accuracy" in version["metrics"]

        upload(api, breast_cancer_csv(tmp_path / "cancer.csv"), "cancer")
        long = _train(api, target="label", params={"epochs": 5000, "batch_size": 8}).json()

        def epochs_reported() -> bool:
            events = api.get(f"/v1/jobs/{long['id']}/events", params={"limit": 1000}).json()["data"]
            return any(event["type"] == "metrics" for event in events)

        wait_for(epochs_reported, timeout=90, every=0.2)
        assert api.post(f"/v1/training_jobs/{long['id']}/cancel").json()["cancel_requested"] is True
        stopped = job_in(
            api, f"/v1/training_jobs/{long['id']}", {"cancelled", "succeeded", "failed"}, timeout=15
        )
        assert stopped["status"] == "cancelled"
        assert _error(api.post(f"/v1/jobs/{long['id']}/cancel"), 409)["code"] == "job_finished"
        assert api.get("/v1/registry/models/cancer").status_code == 404  # a cancelled run registers nothing


def test_dataset_references_past_a_version_number_are_422_not_500(served: Served) -> None:
    """`GET /v1/datasets/x:²` (a digit to str.isdigit, not to int) and a version past 64 bits
    answered 500 (found by schemathesis)."""
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        for ref in ["x:²", "x:99999999999999999999999", "x:1234567890", "x:٣", "x:"]:
            response = client.get(f"/v1/datasets/{ref}")
            assert response.status_code == 422, (ref, response.text)
            assert response.json()["error"]["param"] == "dataset"
        assert client.get("/v1/datasets/x:123456789").status_code == 404
        assert client.get("/v1/datasets/ds_0000").status_code == 404
