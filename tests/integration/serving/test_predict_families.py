"""Every trainable family deploys and predicts over HTTP exactly what the trained model predicts,
and bad inputs get a 4xx naming the row and field."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from openmaas import Client
from openmaas.cli.main import app
from openmaas.training.artifact import load_artifact
from tests.integration.serving.predict_support import (
    FAMILIES,
    artifact,
    b64,
    digit_png,
    register,
    silent_wav,
    speech_wav,
)
from tests.support.served import Served

ROWS = [{"age": 75.0, "plan": "basic", "noise": 0.3}, {"age": 19, "plan": "pro", "noise": None}]


def _examples(family: str) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """(JSON inputs, the same inputs as the Predictor takes them, extra body fields)."""
    if family.startswith("tabular"):
        return ROWS, ROWS, {}
    if family == "image-classification":
        images = [digit_png(3), digit_png(7)]
        return [b64(i) for i in images], images, {}
    if family == "text-classification":
        texts = ["rocket orbit moon launch", "recipe oven flour sugar", "team goal"]
        return texts, texts, {}
    if family == "audio-classification":
        clips = [speech_wav("two"), silent_wav()]
        return [b64(c) for c in clips], clips, {}
    return ["u1", "u7", "someone-new"], ["u1", "u7", "someone-new"], {"top_k": 3}


def _deploy(served: Served, key: str, ref: str, name: str, **options: Any) -> None:
    with Client(served.url, key) as client:
        client.deployments.create(ref, name=name, **options)
        client.deployments.wait_ready(name, timeout=60)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_deploys_and_predicts_like_the_trained_model(served: Served, family: str) -> None:
    tenant = served.tenant("acme")
    folder = artifact(family)
    ref = register(served, tenant, folder, "m")
    _deploy(served, tenant.key, ref, "api")
    inputs, raw, extra = _examples(family)
    with served.client(tenant.key) as http:
        response = http.post("/v1/deployments/api/predict", json={"inputs": inputs, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == ref and body["task"] == family and body["version_id"].startswith("mv_")
    assert response.headers["x-ratelimit-limit-requests"]
    expected = [p.to_dict() for p in load_artifact(folder).predict(raw, k=extra.get("top_k"))]
    got = body["predictions"]
    assert len(got) == len(expected)
    for served_one, direct in zip(got, expected, strict=True):
        assert served_one.keys() == direct.keys()
        for field, value in direct.items():
            if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], float)):
                assert served_one[field] == pytest.approx(value, abs=1e-5)
            elif isinstance(value, float):
                assert served_one[field] == pytest.approx(value, rel=1e-5)
            else:
                assert served_one[field] == value


def test_tabular_answers_make_sense_and_are_metered(served: Served) -> None:
    tenant = served.tenant("acme")
    _deploy(
        served, tenant.key, register(served, tenant, artifact("tabular-classification"), "churn"), "churn"
    )
    with served.client(tenant.key) as http:
        body = {"inputs": [*ROWS, {"age": 60, "plan": "never-seen", "noise": 1}], "top_k": 1}
        response = http.post("/v1/deployments/churn/predict", json=body)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert [p["label"] for p in predictions[:2]] == ["yes", "no"]
        assert all(len(p["probabilities"]) == 1 for p in predictions)
        events = http.get("/v1/usage", params={"granularity": "event"}).json()["data"]
    units = {e["unit"]: e["quantity"] for e in events if e["request_id"] == response.headers["x-request-id"]}
    assert units == {"requests": 1, "rows": 3}
    with Client(served.url, tenant.key) as client:
        answer = client.deployments.predict("churn", ROWS[:1], top_k=2)
    assert answer.model == "churn:1" and answer.predictions[0]["label"] == "yes"
    env = {"OPENMAAS_URL": served.url, "OPENMAAS_API_KEY": tenant.key, "OPENMAAS_CONFIG_DIR": "/nonexistent"}
    cli = CliRunner().invoke(app, ["predict", "churn", "--input", json.dumps(ROWS[1]), "--json"], env=env)
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["predictions"][0]["label"] == "no"


def _error(http: httpx.Client, name: str, body: Any, status: int) -> dict[str, Any]:
    response = http.post(f"/v1/deployments/{name}/predict", json=body)
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_bad_inputs_get_4xx_naming_the_row_and_field(served: Served) -> None:
    tenant = served.tenant("acme")
    key = tenant.key
    _deploy(
        served,
        key,
        register(served, tenant, artifact("tabular-classification"), "t"),
        "tab",
        max_batch_size=4,
    )
    _deploy(served, key, register(served, tenant, artifact("image-classification"), "i"), "img")
    _deploy(served, key, register(served, tenant, artifact("audio-classification"), "a"), "wav")
    _deploy(served, key, register(served, tenant, artifact("recommendation"), "r"), "rec")
    row = ROWS[0]
    with served.client(key) as http:
        assert (
            _error(http, "tab", {"inputs": [row, {"plan": "pro", "noise": 1}]}, 422)["param"]
            == "inputs.1.age"
        )
        wrong_type = _error(http, "tab", {"inputs": [row, row, {**row, "age": "old"}]}, 422)
        assert wrong_type["param"] == "inputs.2.age" and "number" in wrong_type["message"]
        assert _error(http, "tab", {"inputs": [{**row, "height": 2}]}, 422)["param"] == "inputs.0.height"
        assert _error(http, "tab", {"inputs": [[75, "basic", 0.3]]}, 422)["param"] == "inputs.0"
        assert _error(http, "tab", {"inputs": {"age": 3}}, 422)["param"] == "inputs"
        assert _error(http, "tab", {"inputs": []}, 422)["param"] == "inputs"
        assert _error(http, "tab", {"rows": [row]}, 422)["param"] == "inputs"
        assert _error(http, "tab", {"inputs": [row], "colour": 1}, 422)["param"] == "colour"
        # More rows than max_batch_size (4) are answered, in micro-batches (past the server's
        # predict_max_rows they are too_many_inputs: test_predict_batching.py).
        oversized = http.post("/v1/deployments/tab/predict", json={"inputs": [row] * 5})
        assert oversized.status_code == 200 and len(oversized.json()["predictions"]) == 5
        assert _error(http, "tab", {"inputs": [row], "top_k": 9}, 422)["param"] == "top_k"
        assert _error(http, "tab", {"inputs": [row], "timeout": -1}, 422)["param"] == "timeout"
        bad_json = http.post(
            "/v1/deployments/tab/predict", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 400

        png = b64(digit_png(1))
        assert _error(http, "img", {"inputs": [png, "not base64!"]}, 422)["param"] == "inputs.1"
        undecodable = _error(http, "img", {"inputs": [png, png, b64(b"GIF89a garbage")]}, 422)
        assert undecodable["param"] == "inputs.2" and "image" in undecodable["message"]
        assert _error(http, "img", {"inputs": [7]}, 422)["param"] == "inputs.0"
        assert _error(http, "wav", {"inputs": [b64(b"RIFF but not really")]}, 422)["param"] == "inputs.0"
        assert _error(http, "rec", {"inputs": ["u1", {"id": 1}]}, 422)["param"] == "inputs.1"
        assert _error(http, "rec", {"inputs": ["u1"], "top_k": 0}, 422)["param"] == "top_k"

        assert _error(http, "nothing", {"inputs": [row]}, 404)["param"] == "model"
    with served.client(served.tenant("globex").key) as other:
        assert _error(other, "tab", {"inputs": [row]}, 404)["code"] == "model_not_found"
