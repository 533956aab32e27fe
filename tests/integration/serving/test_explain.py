"""`POST /v1/deployments/{name}/explain` over real HTTP: attributions that make sense (a feature the
model provably ignores scores ~0), the right shapes per family, 4xx naming the field for bad
requests, and the explanation queue's own limits (503 when full, 504 past the deadline) while
predictions keep flowing."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from openmaas import AsyncClient, Client
from openmaas.cli.main import app
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.serving.explain.attribution import feature_widths
from openmaas.serving.explain.explainer import Explainer
from openmaas.serving.explain.options import ExplainLimits
from openmaas.serving.runtimes.predictor import PredictorRuntime
from openmaas.training.artifact import WEIGHTS, load_artifact, write_artifact
from openmaas.training.train import train
from tests.data.builders import topic_texts_csv
from tests.integration.serving.predict_support import artifact, b64, digit_png, register, speech_wav
from tests.support.served import Served, Tenant

ROWS = [{"age": 75.0, "plan": "basic", "noise": 0.3}, {"age": 19, "plan": "pro", "noise": -1.7}]


@functools.cache
def _blind_to_noise(tmp: Path) -> Path:
    """The tiny churn MLP with its first layer's `noise` weights zeroed: provably ignores `noise`."""
    source = artifact("tabular-classification")
    folder = tmp / "blind"
    shutil.copytree(source, folder)
    widths = feature_widths(load_artifact(source).preprocessor)  # type: ignore[arg-type]
    names = [name for name, _ in widths]
    column = sum(width for _, width in widths[: names.index("noise")])
    weights = load_file(str(folder / WEIGHTS))
    weights["net.0.weight"][:, column] = 0.0
    save_file(weights, str(folder / WEIGHTS))
    return folder


@functools.cache
def _transformer_text(tmp: Path) -> Path:
    data = topic_texts_csv(tmp / "texts.csv", per_class=30)
    params = {
        "epochs": 2,
        "architecture": "transformer",
        "embedding_dim": 16,
        "num_heads": 2,
        "hidden_size": 16,
    }
    folder = tmp / "transformer"
    write_artifact(
        train("text-classification", data, params, {"text": {"vocab_size": 200, "max_length": 16}}), folder
    )
    return folder


def _deploy(served: Served, tenant: Tenant, folder: Path, name: str, **options: Any) -> None:
    ref = register(served, tenant, folder, name)
    with Client(served.url, tenant.key) as client:
        client.deployments.create(ref, name=name, **options)
        client.deployments.wait_ready(name, timeout=60)


def _explain(http: httpx.Client, name: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = http.post(f"/v1/deployments/{name}/explain", json=body)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_feature_the_model_ignores_gets_no_attribution(served: Served, tmp_path: Path) -> None:
    tenant = served.tenant("acme")
    _deploy(served, tenant, _blind_to_noise(tmp_path), "churn")
    with served.client(tenant.key) as http:
        predicted = http.post("/v1/deployments/churn/predict", json={"inputs": ROWS}).json()["predictions"]
        response = http.post("/v1/deployments/churn/explain", json={"inputs": ROWS, "steps": 64})
        assert response.status_code == 200, response.text
        body = response.json()
        events = http.get("/v1/usage", params={"granularity": "event"}).json()["data"]
        as_no = _explain(http, "churn", {"inputs": ROWS[:1], "target": "no"})["explanations"][0]
    assert (
        body["object"] == "explanations" and body["method"] == "integrated_gradients" and body["steps"] == 64
    )
    assert body["task"] == "tabular-classification" and body["model"] == "churn:1"
    for row, served_one, explained in zip(ROWS, predicted, body["explanations"], strict=True):
        assert explained["prediction"]["label"] == served_one["label"] == explained["target"]
        assert explained["prediction"]["probabilities"] == pytest.approx(
            served_one["probabilities"], abs=1e-5
        )
        scores = explained["attributions"]
        assert scores.keys() == row.keys()  # raw feature names: one-hot `plan` columns summed back
        assert abs(scores["noise"]) < 1e-6
        assert abs(scores["age"]) > 1e-3
        assert abs(explained["convergence_delta"]) < 0.05
    # Explaining the other class flips the sign: P(no) = 1 - P(yes).
    yes = body["explanations"][0]["attributions"]
    assert as_no["target"] == "no" and as_no["attributions"]["age"] == pytest.approx(-yes["age"], abs=0.02)
    units = {e["unit"]: e["quantity"] for e in events if e["request_id"] == response.headers["x-request-id"]}
    assert units == {"requests": 1, "rows": 2}


def test_regression_explains_the_value_against_a_chosen_baseline(served: Served) -> None:
    tenant = served.tenant("acme")
    _deploy(served, tenant, artifact("tabular-regression"), "price")
    baseline = {"age": 40, "plan": "basic", "noise": 0.0}
    with served.client(tenant.key) as http:
        body = _explain(http, "price", {"inputs": [ROWS[0]], "baseline": baseline, "steps": 128})
        at_baseline = _explain(http, "price", {"inputs": [baseline], "baseline": baseline})
    explained = body["explanations"][0]
    assert explained["target"] is None and "value" in explained["prediction"]
    scores = explained["attributions"]
    # Completeness: the scores add up to value(input) - value(baseline), up to the reported delta.
    gap = explained["prediction"]["value"] - at_baseline["explanations"][0]["prediction"]["value"]
    assert sum(scores.values()) == pytest.approx(gap, abs=abs(explained["convergence_delta"]) + 1e-3)
    assert scores["plan"] == pytest.approx(0.0, abs=1e-6)  # same plan as the baseline
    assert all(abs(v) < 1e-6 for v in at_baseline["explanations"][0]["attributions"].values())


@pytest.mark.parametrize("architecture", ["lstm", "transformer"])
def test_text_attributions_follow_the_tokens(served: Served, tmp_path: Path, architecture: str) -> None:
    tenant = served.tenant("acme")
    folder = artifact("text-classification") if architecture == "lstm" else _transformer_text(tmp_path)
    _deploy(served, tenant, folder, "topics")
    texts = ["rocket orbit moon launch", "team goal", " ".join(["recipe oven flour sugar"] * 10)]
    with served.client(tenant.key) as http:
        body = _explain(http, "topics", {"inputs": texts, "steps": 20})
    preprocessor: Any = load_artifact(folder).preprocessor
    for text, explained in zip(texts, body["explanations"], strict=True):
        tokens = preprocessor.tokenizer.encode(text).tokens[: preprocessor.max_length]
        assert explained["attributions"]["tokens"] == tokens
        assert len(explained["attributions"]["scores"]) == len(tokens)
        assert any(abs(s) > 0 for s in explained["attributions"]["scores"])
        assert explained["target"] == explained["prediction"]["label"]
        # A number, not null: the all-padding baseline has an output (it was NaN for transformers).
        assert isinstance(explained["convergence_delta"], float)
    assert len(body["explanations"][2]["attributions"]["tokens"]) == preprocessor.max_length  # truncated


def _png_size(encoded: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        assert image.format == "PNG"
        return image.size


def test_images_and_audio_get_heatmaps_the_size_of_the_model_input(served: Served) -> None:
    tenant = served.tenant("acme")
    _deploy(served, tenant, artifact("image-classification"), "digits")
    _deploy(served, tenant, artifact("audio-classification"), "speech")
    with served.client(tenant.key) as http:
        image = _explain(http, "digits", {"inputs": [b64(digit_png(3)), b64(digit_png(7))], "steps": 16})
        white = _explain(http, "digits", {"inputs": [b64(digit_png(3))], "baseline": 1.0, "steps": 16})
        audio = _explain(http, "speech", {"inputs": [b64(speech_wav("two"))], "steps": 16})
    for explained in image["explanations"]:
        pixels = explained["attributions"]["pixels"]
        assert (pixels["height"], pixels["width"]) == (8, 8)  # the model's input size
        assert _png_size(explained["attributions"]["heatmap_png"]) == (8, 8)
        assert len(pixels["top_pixels"]) == 10 and pixels["max_abs"] > 0
    assert (
        white["explanations"][0]["attributions"]["pixels"]
        != image["explanations"][0]["attributions"]["pixels"]
    )
    spectrogram = audio["explanations"][0]["attributions"]
    runtime = PredictorRuntime(artifact("audio-classification"), RuntimeConfig())
    try:
        mels, frames = runtime.predictors[0].preprocessor.transform([speech_wav("two")]).shape[2:]
    finally:
        runtime.close()
    assert len(spectrogram["frames"]) == frames and len(spectrogram["mel_bins"]) == mels
    assert _png_size(spectrogram["heatmap_png"]) == (frames, mels)


def _error(http: httpx.Client, name: str, body: Any, status: int = 422) -> dict[str, Any]:
    error: dict[str, Any] = _explain(http, name, body, status)["error"]
    return error


def test_bad_requests_get_4xx_naming_the_field(served: Served) -> None:
    tenant = served.tenant("acme")
    _deploy(served, tenant, artifact("tabular-classification"), "tab")
    _deploy(served, tenant, artifact("tabular-regression"), "reg")
    _deploy(served, tenant, artifact("text-classification"), "txt")
    _deploy(served, tenant, artifact("recommendation"), "rec")
    _deploy(served, tenant, artifact("image-classification"), "img")
    row = ROWS[0]
    with served.client(tenant.key) as http:
        assert _error(http, "tab", {"inputs": [{"plan": "pro", "noise": 1}]})["param"] == "inputs.0.age"
        assert _error(http, "tab", {"inputs": [[75, "basic", 0.3]]})["param"] == "inputs.0"
        assert _error(http, "tab", {"inputs": []})["param"] == "inputs"
        too_many = _error(http, "tab", {"inputs": [row] * 17})
        assert too_many["param"] == "inputs" and too_many["code"] == "too_many_inputs"
        label = _error(http, "tab", {"inputs": [row], "target": "maybe"})
        assert label["param"] == "target" and label["code"] == "unknown_label" and "'yes'" in label["message"]
        assert _error(http, "reg", {"inputs": [row], "target": "yes"})["param"] == "target"
        for steps in (1, 257, "50", 12.5, True):
            assert _error(http, "tab", {"inputs": [row], "steps": steps})["param"] == "steps"
        assert _error(http, "tab", {"inputs": [row], "baseline": {"age": 40}})["param"] == "baseline.plan"
        assert (
            _error(http, "tab", {"inputs": [row], "baseline": {**row, "age": "x"}})["param"] == "baseline.age"
        )
        assert _error(http, "txt", {"inputs": ["hi"], "baseline": "pad"})["param"] == "baseline"
        assert _error(http, "tab", {"inputs": [row], "timeout": 0})["param"] == "timeout"
        assert _error(http, "tab", {"inputs": [row], "colour": 1})["param"] == "colour"
        png = b64(digit_png(1))
        undecodable = _error(http, "img", {"inputs": [png, b64(b"GIF89a garbage")]})
        assert undecodable["param"] == "inputs.1" and "image" in undecodable["message"]
        assert _error(http, "img", {"inputs": ["not base64!"]})["param"] == "inputs.0"
        assert _error(http, "img", {"inputs": [png], "baseline": -0.5})["param"] == "baseline"
        bad_json = http.post(
            "/v1/deployments/tab/explain", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 400
        recommender = _error(http, "rec", {"inputs": ["u1"]}, 400)
        assert recommender["code"] == "explanations_unsupported" and recommender["param"] == "deployment"
        assert "recommendation" in recommender["message"]
        assert _error(http, "nothing", {"inputs": [row]}, 404)["param"] == "model"
    with served.client(served.tenant("globex").key) as other:
        assert _error(other, "tab", {"inputs": [row]}, 404)["code"] == "model_not_found"
    reader = served.tenant("readers", scopes=["models:read"])
    with served.client(reader.key) as http:
        assert http.post("/v1/deployments/tab/explain", json={"inputs": [row]}).status_code == 403


def _held_explainer(
    served: Served, tenant: Tenant, name: str
) -> tuple[Explainer, threading.Event, threading.Event]:
    """The deployment's explainer with a one-request queue, whose worker waits for `release` after
    taking each job (and sets `started`): the queue's state is then set by the test, not by timing."""
    served_model = served.platform.served_models.lookup(tenant.org_id, name)
    assert served_model is not None
    explainer = served_model.runtime.explainer(ExplainLimits(max_queue=1))
    started, release = threading.Event(), threading.Event()
    run = explainer.explain_rows

    def held(rows: list[Any], options: Any) -> list[dict[str, Any]]:
        started.set()
        assert release.wait(30)
        return run(rows, options)

    explainer.explain_rows = held  # type: ignore[method-assign]
    return explainer, started, release


def _wait_until(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_full_explanation_queue_answers_503_and_predictions_keep_flowing(served: Served) -> None:
    tenant = served.tenant("acme")
    _deploy(served, tenant, artifact("tabular-classification"), "churn")
    explainer, started, release = _held_explainer(served, tenant, "churn")
    body = {"inputs": ROWS[:1], "steps": 8}
    with served.client(tenant.key) as http, ThreadPoolExecutor(2) as pool:
        running = pool.submit(http.post, "/v1/deployments/churn/explain", json=body)
        assert started.wait(10)  # the worker holds the first request
        waiting = pool.submit(http.post, "/v1/deployments/churn/explain", json=body)
        _wait_until(lambda: explainer.queued == 1)  # the second waits in the one-slot queue
        full = http.post("/v1/deployments/churn/explain", json=body)
        predicted = http.post("/v1/deployments/churn/predict", json={"inputs": ROWS}, timeout=5)
        release.set()
        answers = [running.result(30), waiting.result(30)]
    assert full.status_code == 503, full.text
    assert full.headers["retry-after"] == "1" and full.json()["error"]["code"] == "queue_full"
    assert "explanation queue" in full.json()["error"]["message"]
    assert predicted.status_code == 200  # answered while the explainer was busy and its queue full
    assert [a.status_code for a in answers] == [200, 200]


def test_an_explanation_past_its_deadline_answers_504(served: Served) -> None:
    tenant = served.tenant("acme")
    _deploy(served, tenant, artifact("tabular-classification"), "churn")
    _explainer, started, release = _held_explainer(served, tenant, "churn")
    with served.client(tenant.key) as http, ThreadPoolExecutor(1) as pool:
        running = pool.submit(http.post, "/v1/deployments/churn/explain", json={"inputs": ROWS[:1]})
        assert started.wait(10)
        late = http.post(
            "/v1/deployments/churn/explain", json={"inputs": ROWS[:1]}, headers={"X-Request-Timeout": "0.2"}
        )
        release.set()
        assert running.result(30).status_code == 200
    assert late.status_code == 504 and late.json()["error"]["code"] == "deadline_exceeded"


def test_sdk_and_cli_explain(served: Served, tmp_path: Path) -> None:
    tenant = served.tenant("acme")
    _deploy(served, tenant, _blind_to_noise(tmp_path), "churn")
    with Client(served.url, tenant.key) as client:
        answer = client.deployments.explain("churn", ROWS[:1], target="no", steps=16)
    assert answer.steps == 16 and answer.explanations[0].target == "no"
    assert abs(answer.explanations[0].attributions["noise"]) < 1e-6

    async def explain_async() -> Any:
        async with AsyncClient(served.url, tenant.key) as client:
            return await client.deployments.explain("churn", ROWS, timeout=20)

    assert len(asyncio.run(explain_async()).explanations) == 2
    env = {"OPENMAAS_URL": served.url, "OPENMAAS_API_KEY": tenant.key, "OPENMAAS_CONFIG_DIR": "/nonexistent"}
    table = CliRunner().invoke(
        app, ["explain", "churn", "--input", json.dumps(ROWS[0]), "--top", "2"], env=env
    )
    assert table.exit_code == 0, table.output
    assert "age" in table.output and "noise" not in table.output and "convergence delta" in table.output
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    raw = CliRunner().invoke(
        app, ["explain", "churn", "--inputs-file", str(tmp_path / "rows.json"), "--json"], env=env
    )
    assert raw.exit_code == 0, raw.output
    assert len(json.loads(raw.output)["explanations"]) == 2
    neither = CliRunner().invoke(app, ["explain", "churn"], env=env)
    assert neither.exit_code != 0 and "--input" in neither.output
