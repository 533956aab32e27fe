"""Optimising the other trainable families: the text LSTM and the image and audio CNNs export to ONNX and
quantise where it helps, measured on their own test splits, and an ONNX text model deploys and
predicts like its parent. Runs the job's build step directly on tiny trained artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas.optimize.build import build_optimized
from openmaas.optimize.methods import parse_method
from openmaas.optimize.onnx_model import load_predictor
from openmaas.training.artifact import load_artifact
from tests.integration.jobs.harness import wait_for
from tests.integration.serving.predict_support import (
    artifact,
    digit_png,
    register,
    silent_wav,
    speech_wav,
)
from tests.support.served import Served

TEXTS = ["rocket orbit moon launch", "recipe oven flour sugar", "team goal match"]


def _build(family: str, data: str, method: str, dest: Path) -> dict[str, Any]:
    parent = artifact(family)
    return build_optimized(
        parent,
        parent.parent / data,
        dest,
        staging_root=dest.parent,
        method=parse_method(method),
        max_drop=1.0,
        force=False,
        progress=lambda stage, message: None,
        parent_ref="m:1",
    )


@pytest.mark.parametrize(
    ("family", "data", "method", "example"),
    [
        ("text-classification", "texts.csv", "dynamic-int8", TEXTS),
        ("image-classification", "digits.zip", "static-int8", [digit_png(3), digit_png(7)]),
        ("audio-classification", "speech.zip", "static-int8", [speech_wav("two"), silent_wav()]),
    ],
)
def test_lstm_and_cnn_quantise_with_measured_numbers(
    tmp_path: Path, family: str, data: str, method: str, example: list[Any]
) -> None:
    manifest = _build(family, data, method, tmp_path / "result")
    optimization = manifest["optimization"]
    assert manifest["runtime"] == "onnxruntime" and optimization["quantization"]["mode"] in method
    assert optimization["metric_change"]["metric"] == "accuracy"
    for side in ("parent", "result"):
        assert all(v > 0 for v in optimization[side]["latency_ms"].values())
    parent = load_artifact(artifact(family)).predict(example)
    result = load_predictor(tmp_path / "result").predict(example)
    for before, after in zip(parent, result, strict=True):
        for label, p in before.probabilities.items():  # type: ignore[union-attr]
            assert after.probabilities[label] == pytest.approx(p, abs=0.1)  # type: ignore[union-attr]


def test_an_onnx_lstm_deploys_and_predicts_like_its_parent(served: Served, tmp_path: Path) -> None:
    _build("text-classification", "texts.csv", "onnx-fp32", tmp_path / "onnx")
    tenant = served.tenant("acme")
    refs = {"parent": register(served, tenant, artifact("text-classification"), "topics")}
    refs["onnx"] = register(served, tenant, tmp_path / "onnx", "topics")
    with served.client(tenant.key) as http:
        answers = {}
        for name, ref in refs.items():
            assert http.post("/v1/deployments", json={"model": ref, "name": name}).status_code == 201
        for name in refs:
            _ready(http, name)
            response = http.post(f"/v1/deployments/{name}/predict", json={"inputs": TEXTS})
            assert response.status_code == 200, response.text
            answers[name] = response.json()["predictions"]
    for before, after in zip(answers["parent"], answers["onnx"], strict=True):
        assert after["label"] == before["label"]
        for label, p in before["probabilities"].items():
            assert after["probabilities"][label] == pytest.approx(p, abs=1e-4)


def _ready(http: httpx.Client, name: str) -> None:
    wait_for(lambda: http.get(f"/v1/deployments/{name}").json()["state"] == "ready" or None, timeout=60)
