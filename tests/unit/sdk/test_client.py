"""The SDK's clients against a fake server (httpx.MockTransport): `Client` and `AsyncClient` run
the same method definitions, so each behaviour is checked through both."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Callable
from inspect import isawaitable
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import AsyncClient, Client
from openmaas.sdk import APIConnectionError, ConflictError, NotFoundError
from openmaas.sdk.client import iterate

NOW = "2026-11-05T10:00:00Z"
Handler = Callable[[httpx.Request], httpx.Response]


def organization(name: str) -> dict[str, Any]:
    return {"id": f"org_{name}", "name": name, "plan": "default", "created_at": NOW}


def deployment(
    name: str, model: str, state: str = "ready", traffic: list[Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "dep_1",
        "name": name,
        "model": model,
        "version_id": "mv_1",
        "task": "tabular-classification",
        "state": state,
        "replicas": 1,
        "config": {},
        "traffic": traffic or [],
        "error": None,
        "created_at": NOW,
        "updated_at": NOW,
    }


def job(status: str) -> dict[str, Any]:
    return {
        "id": "job_1",
        "kind": "train",
        "status": status,
        "params": {},
        "result": None,
        "error": None,
        "attempts": 1,
        "max_attempts": 3,
        "cancel_requested": False,
        "pause_requested": False,
        "created_at": NOW,
        "started_at": NOW,
        "finished_at": None,
    }


def dataset(size: int) -> dict[str, Any]:
    return {
        "id": "ds_1",
        "name": "churn",
        "version": 1,
        "filename": "data.csv",
        "format": "csv",
        "sha256": "0" * 64,
        "size_bytes": size,
        "status": "validating",
        "validation_job_id": "job_1",
        "rows": None,
        "schema": None,
        "issues": [],
        "created_at": NOW,
    }


def with_each_client(handler: Handler, use: Callable[[Any], Any]) -> list[Any]:
    """`use(client)` with a `Client`, then awaited with an `AsyncClient`; both results."""
    transport = httpx.MockTransport(handler)
    with Client("http://om", "om-key", transport=transport) as client:
        blocking = use(client)

    async def awaited() -> Any:
        async with AsyncClient("http://om", "om-key", transport=transport) as client:
            result = use(client)
            return await result if isawaitable(result) else result

    return [blocking, asyncio.run(awaited())]


def test_both_clients_send_the_same_request_and_read_the_same_typed_answer() -> None:
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=organization("acme"))

    results = with_each_client(
        server, lambda c: c.admin.organizations.create("acme", plan="pro", idempotency_key="once")
    )

    assert [org.id for org in results] == ["org_acme", "org_acme"]
    for request in seen:
        assert (request.method, request.url.path) == ("POST", "/v1/admin/organizations")
        assert request.headers["authorization"] == "Bearer om-key"
        assert request.headers["idempotency-key"] == "once"
        assert json.loads(request.content) == {"name": "acme", "plan": "pro", "timezone": "UTC"}


def test_an_error_answer_raises_its_exception_class_with_the_server_s_details() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        error = {"error": {"message": "taken", "type": "conflict", "param": "name", "code": "name_taken"}}
        return httpx.Response(409, json=error, headers={"x-request-id": "req_1"})

    with (
        Client("http://om", transport=httpx.MockTransport(server)) as client,
        pytest.raises(ConflictError) as blocking,
    ):
        client.api_keys.revoke("key_1")
    assert blocking.value.param == "name" and blocking.value.request_id == "req_1"

    async def awaited() -> None:
        async with AsyncClient("http://om", transport=httpx.MockTransport(server)) as client:
            with pytest.raises(ConflictError) as conflict:
                await client.api_keys.revoke("key_1")
            assert conflict.value.code == "name_taken" and conflict.value.status_code == 409

    asyncio.run(awaited())


def test_an_unreachable_server_raises_api_connection_error() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with (
        Client("http://om", transport=httpx.MockTransport(server)) as client,
        pytest.raises(APIConnectionError),
    ):
        client.me()

    async def awaited() -> None:
        async with AsyncClient("http://om", transport=httpx.MockTransport(server)) as client:
            with pytest.raises(APIConnectionError, match="Cannot reach http://om"):
                await client.me()

    asyncio.run(awaited())


def test_pages_leave_out_unset_filters_and_iterate_follows_them() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        assert "organization_id" not in request.url.params and request.url.params["limit"] == "1"
        page = {"data": [organization("b" if after else "a")], "has_more": not after, "last_id": "org_a"}
        return httpx.Response(200, json=page)

    with Client("http://om", transport=httpx.MockTransport(server)) as client:
        assert [org.name for org in iterate(client.admin.organizations.list, limit=1)] == ["a", "b"]


def test_an_upload_streams_the_file_and_reports_progress(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(b"x,y\n" * 300_000)  # more than one chunk
    received: list[tuple[str, bytes, dict[str, str]]] = []

    def server(request: httpx.Request) -> httpx.Response:
        received.append((request.headers["content-type"], request.content, dict(request.url.params)))
        return httpx.Response(201, json=dataset(len(request.content)))

    progress: list[tuple[int, int]] = []
    results = with_each_client(
        server, lambda c: c.datasets.upload(data, name="churn", progress=lambda *p: progress.append(p))
    )

    assert [d.size_bytes for d in results] == [data.stat().st_size] * 2
    for content_type, content, params in received:
        assert content_type == "application/octet-stream" and content == data.read_bytes()
        assert params == {"name": "churn", "filename": "data.csv"}
    assert progress[-1] == (data.stat().st_size, data.stat().st_size) and len(progress) == 4


def test_a_download_is_saved_with_progress(tmp_path: Path) -> None:
    def server(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/registry/versions/churn:1/download"
        return httpx.Response(200, content=b"zip" * 1000)

    progress: list[tuple[int, int]] = []
    paths = with_each_client(
        server,
        lambda c: c.registry.download(
            "churn:1", tmp_path / f"{type(c).__name__}.zip", lambda *p: progress.append(p)
        ),
    )

    assert [p.read_bytes() for p in paths] == [b"zip" * 1000] * 2
    assert progress[-1] == (3000, 3000)


def test_a_failed_import_still_removes_its_temporary_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")

    def server(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/zip"
        return httpx.Response(404, json={"error": {"message": "no such organisation"}})

    transport = httpx.MockTransport(server)
    with Client("http://om", transport=transport) as client:
        try:
            client.import_model(model, "bert")
        except NotFoundError as failed:  # removed already, not when the failure is forgotten
            assert failed.status_code == 404 and list((tmp_path / "tmp").iterdir()) == []
        else:
            pytest.fail("the import should have failed")

    async def awaited() -> None:
        async with AsyncClient("http://om", transport=transport) as client:
            with pytest.raises(NotFoundError):
                await client.import_model(model, "bert")
            assert list((tmp_path / "tmp").iterdir()) == []

    asyncio.run(awaited())


def test_job_events_stream_until_the_job_ends() -> None:
    events = [
        {
            "id": i,
            "job_id": "job_1",
            "created_at": NOW,
            "type": t,
            "level": "info",
            "message": t,
            "data": None,
        }
        for i, t in enumerate(("status", "metrics"), start=1)
    ]
    body = "".join(f"event: job.event\ndata: {json.dumps(e)}\n\n" for e in events) + ": ping\n\n"
    body += "event: done\ndata: {}\n\n"

    def server(request: httpx.Request) -> httpx.Response:
        assert request.url.params["stream"] == "true" and request.url.params["after"] == "0"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    transport = httpx.MockTransport(server)
    with Client("http://om", transport=transport) as client:
        assert [e.type for e in client.jobs.stream_events("job_1", after=0)] == ["status", "metrics"]

    async def awaited() -> list[str]:
        async with AsyncClient("http://om", transport=transport) as client:
            return [e.type async for e in client.training_jobs.stream_events("job_1", after=0)]

    assert asyncio.run(awaited()) == ["status", "metrics"]


def test_a_canary_reads_the_deployment_then_splits_its_traffic() -> None:
    patches: list[Any] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=deployment("churn-api", "churn:3"))
        patches.append(json.loads(request.content))
        return httpx.Response(200, json=deployment("churn-api", "churn:3"))

    with_each_client(server, lambda c: c.deployments.canary("churn-api", "churn:4", 10))

    split = {"traffic": [{"version": "churn:3", "weight": 90}, {"version": "churn:4", "weight": 10}]}
    assert patches == [split, split]


def test_waiting_polls_until_the_job_ends() -> None:
    statuses = iter(["queued", "running", "succeeded"] * 2)

    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=job(next(statuses)))

    results = with_each_client(server, lambda c: c.jobs.wait("job_1", interval=0))
    assert [j.status for j in results] == ["succeeded", "succeeded"]


def test_finalize_invoices_returns_the_finalised_ids() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"finalized": ["inv_1"]})

    assert with_each_client(server, lambda c: c.admin.billing.finalize_invoices()) == [["inv_1"], ["inv_1"]]
