"""Rolling an LLM deployment to a new version over a real server: under concurrent chat requests
and streams none fails, requests after the switch are served (and metered) by the new version,
the old engine is freed and each step is an event; when both versions do not fit the memory
budget the update is refused with 409 and a stop-then-start (`recreate`) answers 503 with
Retry-After in its gap; bad updates are refused naming the field."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import Client
from openmaas.serving import loading
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.serving.memory import MIB, artifact_bytes
from openmaas.serving.runtimes import load_runtime
from tests.support.platforms import make_platform
from tests.support.served import Served, Tenant, serving

ENGINE = {"kv_cache_memory_bytes": 4 * 1024 * 1024, "max_num_seqs": 8, "max_model_len": 128}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


@pytest.fixture
def versions(tiny_llm_versions: tuple[Path, Path]) -> tuple[Path, Path]:
    return tiny_llm_versions


def _server(home: Path, **settings: object) -> Iterator[Served]:
    with serving(make_platform(home, f"sqlite:///{home / 'openmaas.db'}", **settings)) as served:
        yield served


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the tests that need no memory budget (each uses its own organisation)."""
    yield from _server(tmp_path_factory.mktemp("roomy"))


def _deployed(served: Served, org: str, versions: tuple[Path, Path]) -> tuple[Tenant, list[str]]:
    """`org` with both versions imported as `tiny` and `chat` serving tiny:1; the version ids."""
    tenant = served.tenant(org)
    with Client(served.url, tenant.key) as client:
        ids = [client.import_model(folder, "tiny")["id"] for folder in versions]
        client.deployments.create("tiny:1", name="chat", engine=ENGINE)
        assert client.deployments.wait_ready("chat", timeout=60).serving == "tiny:1"
    return tenant, ids


@dataclass
class Answer:
    status: int
    text: str
    request_id: str
    after_switch: bool


def _ask(http: httpx.Client, stream: bool, after_switch: bool) -> Answer:
    body = {**CHAT, "max_tokens": 12, "ignore_eos": True, "stream": stream}
    if not stream:
        response = http.post("/v1/chat/completions", json=body)
        ok = response.status_code == 200
        text = response.json()["choices"][0]["message"]["content"] if ok else response.text
        return Answer(response.status_code, text, response.headers["x-request-id"], after_switch)
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return Answer(response.status_code, response.read().decode(), "", after_switch)
        text, done = "", False
        for line in response.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                for choice in json.loads(line[6:])["choices"]:
                    text += choice["delta"].get("content") or ""
        # A stream cut off part-way has no [DONE]: counted as failed.
        return Answer(200 if done else 599, text, response.headers["x-request-id"], after_switch)


def _usage_by_request(served: Served, key: str) -> dict[str, list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"granularity": "event", "limit": 100}
    with served.client(key) as http:
        while True:
            page = http.get("/v1/usage", params=params).json()
            rows += page["data"]
            if not page["has_more"]:
                break
            params["after"] = page["last_id"]
    by_request: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["unit"] == "requests":
            by_request.setdefault(row["request_id"], []).append(row)
    return by_request


def _events_until(client: Client, name: str, newest: str) -> list[str]:
    """The deployment's event kinds (newest first), once the newest is `newest` (drains finish on
    their own thread, just after the update's response)."""
    deadline = time.monotonic() + 30
    while (kinds := [e.kind for e in client.deployments.events(name).data])[0] != newest:
        assert time.monotonic() < deadline, kinds
        time.sleep(0.02)
    return kinds


def test_a_rolling_update_under_streaming_load_fails_no_request(
    roomy: Served, versions: tuple[Path, Path]
) -> None:
    tenant, (v1, v2) = _deployed(roomy, "rolling", versions)
    replicas = roomy.platform.replicas
    one_model = replicas.memory_in_use()
    assert one_model > 0
    switched = threading.Event()
    stop = threading.Event()
    answers: list[Answer] = []

    def keep_asking(stream: bool) -> None:
        with roomy.client(tenant.key) as http:
            while not stop.is_set():
                answers.append(_ask(http, stream, switched.is_set()))

    def seen(after_switch: bool) -> int:
        return sum(a.after_switch == after_switch for a in answers)

    def wait_for(count: int, after_switch: bool) -> None:
        deadline = time.monotonic() + 60
        while seen(after_switch) < count:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    with ThreadPoolExecutor(4) as pool, Client(roomy.url, tenant.key) as client:
        clients = [pool.submit(keep_asking, stream) for stream in (True, True, False, False)]
        wait_for(8, after_switch=False)
        with roomy.client(tenant.key) as http:
            patched = http.patch("/v1/deployments/chat", json={"model": "tiny:2"})
        assert patched.status_code == 200, patched.text
        rolling = patched.json()
        assert (rolling["state"], rolling["serving"], rolling["starting"]) == ("loading", "tiny:1", "tiny:2")
        ready = client.deployments.wait_ready("chat", timeout=60)
        switched.set()
        assert (ready.model, ready.serving, ready.starting) == ("tiny:2", "tiny:2", None)
        wait_for(8, after_switch=True)
        stop.set()
        for future in clients:
            future.result()
        kinds = _events_until(client, "chat", "stopped_old")

    failed = [a for a in answers if a.status != 200]
    assert not failed, failed[:3]
    assert kinds[:5] == ["stopped_old", "draining", "switched", "starting", "updating"]
    assert replicas.memory_in_use() == one_model  # the old engine is freed
    # Each request metered once, under the version that served it; after the switch, v2 only.
    usage = _usage_by_request(roomy, tenant.key)
    served_by = {}
    for answer in answers:
        rows = usage.get(answer.request_id, [])
        assert len(rows) == 1 and rows[0]["quantity"] == 1, (answer, rows)
        served_by[answer.request_id] = rows[0]["model"]
    assert {served_by[a.request_id] for a in answers if a.after_switch} == {v2}
    assert {served_by[a.request_id] for a in answers if not a.after_switch} >= {v1}
    # The versions answer differently (other weights): each answer is its own version's.
    texts = {version: {a.text for a in answers if served_by[a.request_id] == version} for version in (v1, v2)}
    assert texts[v1] and texts[v2] and not texts[v1] & texts[v2]


@pytest.fixture
def tight(tmp_path: Path, versions: tuple[Path, Path]) -> Iterator[Served]:
    """A server whose memory budget holds one version, not two."""
    yield from _server(tmp_path / "home", serving_memory_budget_mb=artifact_bytes(versions[0]) * 1.5 / MIB)


def test_an_update_that_does_not_fit_is_refused_and_recreate_answers_503_in_its_gap(
    tight: Served,
    versions: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    tenant, (_, v2) = _deployed(tight, "tight", versions)
    with tight.client(tenant.key) as http, Client(tight.url, tenant.key) as client:
        refused = http.patch("/v1/deployments/chat", json={"model": "tiny:2"})
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("insufficient_memory", "strategy")
        assert '"strategy": "recreate"' in error["message"] and "tiny:1" in error["message"]
        unchanged = client.deployments.get("chat")
        assert (unchanged.state, unchanged.model, unchanged.serving) == ("ready", "tiny:1", "tiny:1")
        assert "updating" not in [e.kind for e in client.deployments.events("chat").data]

        release = threading.Event()

        def held_load(task: str, folder: Path, config: RuntimeConfig) -> Any:
            assert release.wait(30)
            return load_runtime(task, folder, config)

        monkeypatch.setattr(loading, "load_runtime", held_load)
        request.addfinalizer(release.set)  # a failing assertion below must not hold the loader
        recreate = http.patch("/v1/deployments/chat", json={"model": "tiny:2", "strategy": "recreate"})
        assert recreate.status_code == 200, recreate.text
        gap = recreate.json()
        assert (gap["state"], gap["serving"], gap["starting"]) == ("loading", None, "tiny:2")
        waiting = http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})
        assert waiting.status_code == 503 and int(waiting.headers["retry-after"]) >= 1
        assert waiting.json()["error"]["code"] == "model_loading"
        release.set()
        assert client.deployments.wait_ready("chat", timeout=60).serving == "tiny:2"
        served = http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})
        assert served.status_code == 200
        kinds = [e.kind for e in client.deployments.events("chat").data]
    assert kinds[:5] == ["ready", "starting", "stopped_old", "draining", "updating"]
    assert [row["model"] for row in _usage_by_request(tight, tenant.key)[served.headers["x-request-id"]]] == [
        v2
    ]


def test_bad_updates_are_refused_naming_the_field(roomy: Served, versions: tuple[Path, Path]) -> None:
    from tests.integration.serving.predict_support import artifact, register

    tenant, _ = _deployed(roomy, "refusals", versions)
    other = roomy.tenant("refusals-other")
    with Client(roomy.url, other.key) as client:
        client.import_model(versions[1], "theirs")
    tabular = register(roomy, tenant, artifact("tabular-classification"), "churn")
    with roomy.client(tenant.key) as http:
        for body, status, param in [
            ({"model": "tiny:9"}, 404, "model"),
            ({"model": "theirs:1"}, 404, "model"),  # another organisation's model
            ({"model": tabular}, 422, "model"),
            ({"model": "tiny:2", "strategy": "blue-green"}, 422, "strategy"),
        ]:
            response = http.patch("/v1/deployments/chat", json=body)
            assert (response.status_code, response.json()["error"]["param"]) == (status, param), response.text
        assert "text-generation" in http.patch("/v1/deployments/chat", json={"model": tabular}).text
        after = http.get("/v1/deployments/chat").json()
    assert (after["state"], after["model"], after["serving"]) == ("ready", "tiny:1", "tiny:1")


def test_the_cli_rolls_an_existing_deployment_and_shows_what_serves(
    roomy: Served, versions: tuple[Path, Path]
) -> None:
    from typer.testing import CliRunner

    from openmaas.cli.main import app

    tenant, _ = _deployed(roomy, "cli", versions)
    env = {"OPENMAAS_URL": roomy.url, "OPENMAAS_API_KEY": tenant.key, "OPENMAAS_CONFIG_DIR": "/nonexistent"}
    runner = CliRunner()
    rolled = runner.invoke(app, ["deploy", "tiny:2", "--name", "chat", "--json"], env=env)
    assert rolled.exit_code == 0, rolled.output
    assert (json.loads(rolled.output)["model"], json.loads(rolled.output)["serving"]) == ("tiny:2", "tiny:2")
    shown = runner.invoke(app, ["deployments", "show", "chat"], env=env)
    assert shown.exit_code == 0 and "tiny:2" in shown.output, shown.output
    refused = runner.invoke(app, ["deploy", "tiny:1", "--name", "new", "--strategy", "recreate"], env=env)
    assert refused.exit_code != 0 and "existing deployment" in refused.output
