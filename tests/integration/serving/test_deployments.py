"""Deployments over a real server: lifecycle and events, the served-model directory, tenant
isolation, load failures, and reloading after a restart."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from openmaas import Client
from openmaas.api.app import create_app
from openmaas.bootstrap import build_platform
from openmaas.logs import Event
from openmaas.sdk import ConflictError, NotFoundError, UnprocessableEntityError
from tests.integration.serving.predict_support import artifact, register
from tests.support.served import Served
from tests.support.server import running_server

ENGINE = {"kv_cache_memory_bytes": 4 * 1024 * 1024, "max_num_seqs": 4, "max_model_len": 128}


@pytest.fixture
def tiny_folder(tiny_llm_versions: tuple[Path, Path]) -> Path:
    return tiny_llm_versions[0]


def _chat(served: Served, key: str, model: str) -> int:
    with served.client(key) as http:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        return http.post("/v1/chat/completions", json=body).status_code


def test_lifecycle_events_and_directory(served: Served, tiny_folder: Path) -> None:
    tenant = served.tenant("acme")
    with Client(served.url, tenant.key) as client:
        client.import_model(tiny_folder, "tiny")
        created = client.deployments.create("tiny:1", name="bot", engine=ENGINE)
        assert created.state == "pending" and created.task == "text-generation"
        ready = client.deployments.wait_ready("bot", timeout=60)
        assert ready.state == "ready" and ready.config["max_num_seqs"] == 4
        assert [m["id"] for m in client.models()["data"]] == ["bot"]
        assert _chat(served, tenant.key, "bot") == 200
        kinds = [e.kind for e in client.deployments.events("bot").data]
        assert kinds == ["ready", "loading", "created"]  # newest first

        with pytest.raises(ConflictError):
            client.deployments.create("tiny", name="bot")
        with pytest.raises(NotFoundError) as missing:
            client.deployments.create("nothing-here")
        assert missing.value.param == "model"
        with pytest.raises(UnprocessableEntityError) as bad_engine:
            client.deployments.create("tiny", name="other", engine={"warp_drive": 1})
        assert bad_engine.value.param == "engine"
        for setting, value in [
            ("enable_prefix_caching", "false"),
            ("max_num_seqs", True),
            ("cpu_kernels", 1),
        ]:
            with pytest.raises(UnprocessableEntityError) as bad_type:
                client.deployments.create("tiny", name="other", engine={setting: value})
            assert bad_type.value.param == f"engine.{setting}"
        assert [d.name for d in client.deployments.list().data] == ["bot"]  # nothing half-made

        stopped = client.deployments.stop("bot")
        assert stopped.state == "stopped"
        assert client.models()["data"] == []
        assert _chat(served, tenant.key, "bot") == 404
        assert client.deployments.delete("bot").name == "bot"
        with pytest.raises(NotFoundError):
            client.deployments.get("bot")


def test_other_organisations_cannot_see_or_call_a_deployment(served: Served, tiny_folder: Path) -> None:
    acme, globex = served.tenant("acme"), served.tenant("globex")
    with Client(served.url, acme.key) as client:
        client.import_model(tiny_folder, "tiny")
        client.deployments.create("tiny", engine=ENGINE)
        client.deployments.wait_ready("tiny", timeout=60)
    with Client(served.url, globex.key) as other:
        with pytest.raises(NotFoundError):
            other.deployments.get("tiny")
        with pytest.raises(NotFoundError):
            other.deployments.create("tiny")  # acme's model is not globex's
        assert other.models()["data"] == []
    assert _chat(served, globex.key, "tiny") == 404
    assert _chat(served, acme.key, "tiny") == 200


def test_a_model_that_fails_to_load_marks_the_deployment_failed(
    served: Served, tiny_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openmaas.serving")
    tenant = served.tenant("acme")
    with Client(served.url, tenant.key) as client:
        version = client.import_model(tiny_folder, "tiny")
        # The artifact disappears from the store (a disk mishap): loading must fail cleanly.
        with served.platform.db.read_session() as session:
            from openmaas.registry.tables import ModelVersion

            row = session.get(ModelVersion, version["id"])
            assert row is not None
            artifact = served.platform.store.path(row.artifact_path)
        (artifact / "model.safetensors").unlink()
        client.deployments.create("tiny", engine=ENGINE)
        with pytest.raises(RuntimeError, match="failed"):
            client.deployments.wait_ready("tiny", timeout=60)
        failed = client.deployments.get("tiny")
        assert failed.state == "failed" and failed.error
    with served.client(tenant.key) as http:
        response = http.post("/v1/completions", json={"model": "tiny", "prompt": "x"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_failed"
    assert response.headers["retry-after"]
    # The server log told each state change as it happened, the failure as an error.
    told = [
        (r.levelname, r.msg.fields["kind"], r.msg.fields["org_id"], r.msg.fields["deployment_id"])
        for r in caplog.records
        if isinstance(r.msg, Event) and r.msg.name == "deployment_event"
    ]
    assert [kind for _, kind, _, _ in told][-1] == "failed" and "loading" in [kind for _, kind, _, _ in told]
    assert told[-1][0] == "ERROR" and {(org, dep) for _, _, org, dep in told} == {(tenant.org_id, failed.id)}


def test_deployments_come_back_after_a_restart(served: Served, tiny_folder: Path) -> None:
    tenant = served.tenant("acme")
    with Client(served.url, tenant.key) as client:
        client.import_model(tiny_folder, "tiny")
        client.deployments.create("tiny", engine=ENGINE)
        client.deployments.wait_ready("tiny", timeout=60)
    # A second server process on the same home and database, as after a restart.
    restarted = build_platform(served.platform.settings)
    try:
        with running_server(create_app(restarted)) as url, Client(url, tenant.key) as client:
            assert client.deployments.wait_ready("tiny", timeout=60).state == "ready"
            assert [m["id"] for m in client.models()["data"]] == ["tiny"]
    finally:
        restarted.close()


def test_a_replayed_create_answers_the_same_deployment_and_loads_it_once(served: Served) -> None:
    tenant = served.tenant("acme")
    ref = register(served, tenant, artifact("tabular-classification"), "churn")
    headers = {"Idempotency-Key": "deploy-churn"}
    with served.client(tenant.key) as http:
        first = http.post("/v1/deployments", json={"model": ref, "name": "churn"}, headers=headers)
        again = http.post("/v1/deployments", json={"model": ref, "name": "churn"}, headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json() and first.json()["state"] == "pending"
        assert [d["id"] for d in http.get("/v1/deployments").json()["data"]] == [first.json()["id"]]
    with Client(served.url, tenant.key) as client:
        assert client.deployments.wait_ready("churn", timeout=60).id == first.json()["id"]
        kinds = [e.kind for e in client.deployments.events("churn").data]
        assert kinds == ["ready", "loading", "created"]
