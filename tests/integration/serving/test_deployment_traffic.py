"""Traffic splits over HTTP: a canary gets its share of requests (each answer names its version),
promote and roll back are PATCHes, and bad splits are 4xx naming the entry at fault."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx

from openmaas import Client
from tests.integration.serving.predict_support import artifact, register
from tests.support.served import Served

ROW = {"age": 40.0, "plan": "pro", "noise": 0.1}


def _patch(http: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return http.patch("/v1/deployments/api", json=body)


def _answers(http: httpx.Client, count: int) -> list[str]:
    answers = []
    for _ in range(count):
        response = http.post("/v1/deployments/api/predict", json={"inputs": [ROW]})
        assert response.status_code == 200, response.text
        answers.append(response.json()["model"])
    return answers


def test_a_canary_gets_its_share_and_is_promoted_or_rolled_back(served: Served) -> None:
    tenant = served.tenant("acme")
    stable = register(served, tenant, artifact("tabular-classification"), "churn")
    canary = register(served, tenant, artifact("tabular-classification", variant=1), "churn")
    with Client(served.url, tenant.key) as client:
        client.deployments.create(stable, name="api", max_wait_ms=0)
        client.deployments.wait_ready("api", timeout=60)
        with served.client(tenant.key) as http:
            split = [{"version": stable, "weight": 80}, {"version": canary, "weight": 20}]
            patched = _patch(http, {"traffic": split})
            assert patched.status_code == 200, patched.text
            ready = client.deployments.wait_ready("api", timeout=60)
            assert [(t.version, t.weight) for t in ready.traffic] == [(stable, 80), (canary, 20)]
            assert ready.model == stable
            served.platform.replicas.rng = random.Random(7)
            answers = _answers(http, 300)
            # Each request draws once from the seeded generator: the same draws, the same routes.
            draws = random.Random(7)
            assert answers == [stable if draws.random() * 100 < 80 else canary for _ in range(300)]
            assert 0.12 < answers.count(canary) / 300 < 0.28

            assert _patch(http, {"traffic": [{"version": canary, "weight": 100}]}).status_code == 200
            promoted = client.deployments.wait_ready("api", timeout=60)
            assert promoted.model == canary and promoted.traffic == []
            assert set(_answers(http, 20)) == {canary}
            assert _patch(http, {"model": stable}).status_code == 200  # roll back
            assert client.deployments.wait_ready("api", timeout=60).model == stable
            assert set(_answers(http, 20)) == {stable}
        messages = [e.message for e in client.deployments.events("api").data if e.kind == "updating"]
    assert f"traffic: {stable} 80%, {canary} 20%" in messages


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_bad_splits_are_refused_naming_the_entry(served: Served) -> None:
    acme, globex = served.tenant("acme"), served.tenant("globex")
    v1 = register(served, acme, artifact("tabular-classification"), "churn")
    v2 = register(served, acme, artifact("tabular-classification", variant=1), "churn")
    other_task = register(served, acme, artifact("tabular-regression"), "spend")
    foreign = register(served, globex, artifact("tabular-classification"), "theirs")
    with Client(served.url, acme.key) as client:
        client.deployments.create(v1, name="api")
        client.deployments.wait_ready("api", timeout=60)
    with served.client(acme.key) as http:
        sums = _error(
            _patch(http, {"traffic": [{"version": v1, "weight": 60}, {"version": v2, "weight": 30}]}), 422
        )
        assert sums["param"] == "traffic" and sums["code"] == "invalid_traffic"
        twice = _error(
            _patch(http, {"traffic": [{"version": v1, "weight": 50}, {"version": v1, "weight": 50}]}), 422
        )
        assert twice["param"] == "traffic.1.version"
        task = _error(
            _patch(http, {"traffic": [{"version": v1, "weight": 50}, {"version": other_task, "weight": 50}]}),
            422,
        )
        assert task["param"] == "traffic.1.version" and task["code"] == "incompatible_version"
        theirs = _error(
            _patch(http, {"traffic": [{"version": v1, "weight": 50}, {"version": foreign, "weight": 50}]}),
            404,
        )
        assert theirs["param"] == "traffic.1.version"
        zero = _error(_patch(http, {"traffic": [{"version": v1, "weight": 0}]}), 422)
        assert zero["param"].startswith("traffic")
        many = [{"version": v1, "weight": 20}] * 5
        assert _error(_patch(http, {"traffic": many}), 422)["param"].startswith("traffic")
        both = _error(_patch(http, {"model": v2, "traffic": [{"version": v2, "weight": 100}]}), 422)
        assert both["param"] == "traffic"
        assert http.get("/v1/deployments/api").json()["traffic"] == []
        assert http.post("/v1/deployments/api/predict", json={"inputs": [ROW]}).json()["model"] == v1


def test_the_cli_deploys_a_canary_and_sets_the_split(served: Served) -> None:
    from typer.testing import CliRunner

    from openmaas.cli.main import app

    tenant = served.tenant("acme")
    stable = register(served, tenant, artifact("tabular-classification"), "churn")
    canary = register(served, tenant, artifact("tabular-classification", variant=1), "churn")
    env = {"OPENMAAS_URL": served.url, "OPENMAAS_API_KEY": tenant.key, "OPENMAAS_CONFIG_DIR": "/nonexistent"}
    runner = CliRunner()
    created = runner.invoke(
        app, ["deploy", stable, "--name", "api", "--min-replicas", "0", "--json"], env=env
    )
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["config"]["min_replicas"] == 0
    split = runner.invoke(app, ["deploy", canary, "--name", "api", "--canary", "10", "--json"], env=env)
    assert split.exit_code == 0, split.output
    traffic = json.loads(split.output)["traffic"]
    assert [(t["version"], t["weight"]) for t in traffic] == [(stable, 90), (canary, 10)]
    promoted = runner.invoke(app, ["deployments", "traffic", "api", f"{canary}=100", "--json"], env=env)
    assert promoted.exit_code == 0, promoted.output
    assert json.loads(promoted.output)["model"] == canary
    bad = runner.invoke(app, ["deployments", "traffic", "api", f"{canary}=60", f"{stable}=30"], env=env)
    assert bad.exit_code != 0 and "100" in bad.output
    assert "--canary" in runner.invoke(app, ["deploy", "--help"]).output
