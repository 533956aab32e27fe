"""Hostile and extreme inputs to the inference routes and the LLM deployments they run on: each is
refused with a 4xx naming its field (never a 500, never non-finite numbers served as an answer),
nothing is metered for it and nothing is left behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from openmaas import Client
from openmaas.engine.testing import build_tiny_model
from openmaas.serving.runtimes.predictor import PredictorRuntime
from tests.integration.hostile.wire import error_of
from tests.integration.serving.predict_support import artifact, register
from tests.support.leftovers import nothing_left
from tests.support.served import Served, Tenant

ENGINE = {"kv_cache_memory_bytes": 4 * 1024 * 1024, "max_num_seqs": 4, "max_model_len": 256}


def _metered(served: Served, key: str) -> set[str]:
    """The request ids that usage events were recorded for."""
    with served.client(key) as http:
        events = http.get("/v1/usage", params={"granularity": "event", "limit": 100}).json()["data"]
    return {event["request_id"] for event in events}


@pytest.fixture
def llm(served: Served, tenant: Tenant, tmp_path: Path) -> Tenant:
    folder = build_tiny_model(tmp_path / "tiny", "llama", max_position_embeddings=256)
    with Client(served.url, tenant.key) as client:
        client.import_model(folder, "tiny")
        client.deployments.create("tiny", name="chat", engine=ENGINE)
        client.deployments.wait_ready("chat", timeout=60)
    return tenant


# OpenAI bounds `seed` to a signed 64-bit integer; torch.Generator.manual_seed overflowed past it.
@pytest.mark.parametrize("seed", [2**64, 2**63, -(2**63) - 1, -358365313929167241216])
def test_a_seed_past_64_bits_is_refused_naming_seed(served: Served, llm: Tenant, seed: int) -> None:
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    text = {"model": "chat", "prompt": "hi", "max_tokens": 2}
    with served.client(llm.key) as http:
        with nothing_left(served.platform):
            for path, body in (("/v1/chat/completions", chat), ("/v1/completions", text)):
                for stream in (False, True):
                    refused = http.post(path, json={**body, "seed": seed, "stream": stream})
                    assert error_of(refused) == (400, "invalid_value", "seed"), refused.text
        for seed_ok in (2**63 - 1, -(2**63)):
            answered = http.post("/v1/chat/completions", json={**chat, "seed": seed_ok, "n": 3})
            assert answered.status_code == 200, answered.text
    assert len(_metered(served, llm.key)) == 2  # the two answered only


# Engine settings were checked for their type only: 2**64 KV-cache bytes, a negative context or
# 100,000 threads were accepted and handed to the engine.
OUT_OF_RANGE = {
    "max_num_seqs": 2**64,
    "kv_cache_memory_bytes": 2**64,
    "max_model_len": -5,
    "max_num_batched_tokens": 0,
    "num_blocks": -(2**70),
    "block_size": 0,
    "max_waiting_requests": 2**63,
    "num_threads": 100_000,
}


def test_engine_settings_out_of_range_are_refused_naming_them(served: Served, llm: Tenant) -> None:
    with served.client(llm.key) as http, nothing_left(served.platform):
        for setting, value in OUT_OF_RANGE.items():
            body = {"model": "tiny", "name": "other", "engine": {setting: value}}
            refused = http.post("/v1/deployments", json=body)
            assert error_of(refused) == (422, "invalid_value", f"engine.{setting}"), refused.text


ROW = {"age": 40.0, "plan": "pro", "noise": 0.1}


def _deploy(served: Served, tenant: Tenant, family: str, name: str, **options: Any) -> PredictorRuntime:
    ref = register(served, tenant, artifact(family), name)
    with Client(served.url, tenant.key) as client:
        client.deployments.create(ref, name=name, **options)
        client.deployments.wait_ready(name, timeout=60)
    model = served.platform.served_models.lookup(tenant.org_id, name)
    assert model is not None and isinstance(model.runtime, PredictorRuntime)
    return model.runtime


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(path, json=body)


# A float that the fitted standard scaling turns into more than float32 holds ((x - mean) / std);
# the rows were served with `"probabilities": {"no": null, "yes": null}` (issue 15, item 4).
@pytest.mark.parametrize("value", [1e200, 1e308, -1e308, 3.4e39 * 40])
def test_predict_and_explain_refuse_values_the_preprocessing_cannot_represent(
    served: Served, tenant: Tenant, value: float
) -> None:
    _deploy(served, tenant, "tabular-classification", "tab")
    _deploy(served, tenant, "tabular-regression", "reg")
    bad = {**ROW, "age": value}
    with served.client(tenant.key) as http:
        with nothing_left(served.platform):
            for name in ("tab", "reg"):
                for route in ("predict", "explain"):
                    refused = _post(http, f"/v1/deployments/{name}/{route}", {"inputs": [ROW, bad]})
                    assert error_of(refused) == (422, "invalid_input", "inputs.1.age"), refused.text
                    assert "age" in refused.json()["error"]["message"]
            baseline = _post(http, "/v1/deployments/reg/explain", {"inputs": [ROW], "baseline": bad})
            assert error_of(baseline) == (422, "invalid_input", "baseline.age"), baseline.text
        assert _post(http, "/v1/deployments/tab/predict", {"inputs": [ROW]}).status_code == 200
    assert len(_metered(served, tenant.key)) == 1  # only the answered request is metered


class NonFinite(torch.nn.Module):
    """Wraps a tabular model: rows whose first (scaled) feature passes 100 get NaN outputs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x)
        return out.masked_fill((x[:, :1] > 100).expand_as(out), float("nan"))


@contextmanager
def _non_finite(runtime: PredictorRuntime) -> Iterator[None]:
    originals = [predictor.model for predictor in runtime.predictors]
    for predictor in runtime.predictors:
        predictor.model = NonFinite(predictor.model)
    try:
        yield
    finally:
        for predictor, original in zip(runtime.predictors, originals, strict=True):
            predictor.model = original


def test_a_non_finite_output_is_a_clear_error_never_nulls(served: Served, tenant: Tenant) -> None:
    runtimes = {
        name: _deploy(served, tenant, family, name)
        for name, family in (("tab", "tabular-classification"), ("reg", "tabular-regression"))
    }
    far = {**ROW, "age": 1e6}  # representable, but this model answers NaN for it
    with served.client(tenant.key) as http:
        for name, runtime in runtimes.items():
            with _non_finite(runtime):
                with nothing_left(served.platform):
                    for route in ("predict", "explain"):
                        body = {"inputs": [ROW, ROW, far]}
                        refused = _post(http, f"/v1/deployments/{name}/{route}", body)
                        assert error_of(refused) == (422, "non_finite_output", "inputs.2"), refused.text
                        assert "null" not in refused.text
                answered = _post(http, f"/v1/deployments/{name}/predict", {"inputs": [ROW]})
                assert answered.status_code == 200, answered.text
    assert len(_metered(served, tenant.key)) == 2


WEIGHT = np.array([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]], dtype=np.float32)


def _linear_onnx(path: Path, inputs: tuple[str, ...] = ()) -> Path:
    """y = x @ WEIGHT, float32, with a dynamic batch axis; x is one input of 3 columns, or the
    concatenation of 3 named inputs of one column each."""
    names = list(inputs) or ["x"]
    width = 3 // len(names)
    declared = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", width]) for n in names]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    if inputs:
        nodes.insert(0, helper.make_node("Concat", names, ["x"], axis=1))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    graph = helper.make_graph(nodes, "linear", declared, [y], [numpy_helper.from_array(WEIGHT, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_raw_tensors_past_their_dtype_and_non_finite_outputs_are_refused(
    served: Served, tenant: Tenant, tmp_path: Path
) -> None:
    with Client(served.url, tenant.key) as client:
        client.import_model(_linear_onnx(tmp_path / "linear.onnx"), "linear")
        client.deployments.create("linear:1", name="lin")
        client.deployments.wait_ready("lin", timeout=60)
    with served.client(tenant.key) as http:
        with nothing_left(served.platform):
            for value in (1e39, -1e300):
                refused = _post(http, "/v1/deployments/lin/predict", {"inputs": [[1, 2, 3], [value, 0, 0]]})
                assert error_of(refused) == (422, "invalid_input", "inputs.1.x"), refused.text
            overflow = _post(http, "/v1/deployments/lin/predict", {"inputs": [[1, 2, 3], [3e38, 3e38, 0]]})
            assert error_of(overflow) == (422, "non_finite_output", "inputs.1"), overflow.text
        assert _post(http, "/v1/deployments/lin/predict", {"inputs": [[1, 2, 3]]}).status_code == 200


def test_a_row_missing_several_features_names_them_all(
    served: Served, tenant: Tenant, tmp_path: Path
) -> None:
    _deploy(served, tenant, "tabular-classification", "tab")
    with Client(served.url, tenant.key) as client:
        client.import_model(_linear_onnx(tmp_path / "three.onnx", inputs=("a", "b", "c")), "three")
        client.deployments.create("three:1", name="tri")
        client.deployments.wait_ready("tri", timeout=60)
    with served.client(tenant.key) as http, nothing_left(served.platform):
        for route in ("predict", "explain"):
            refused = _post(http, f"/v1/deployments/tab/{route}", {"inputs": [ROW, {"plan": "pro"}]})
            assert error_of(refused) == (422, "invalid_input", "inputs.1.age"), refused.text
            assert "age, noise" in refused.json()["error"]["message"]
        for wrong in ("x", {"age": 1}, [[ROW]], None):
            refused = _post(http, "/v1/deployments/tab/predict", {"inputs": wrong})
            assert refused.status_code == 422 and refused.json()["error"]["param"].startswith("inputs")
        tensors = _post(http, "/v1/deployments/tri/predict", {"inputs": [{"b": [1.0]}]})
        assert error_of(tensors) == (422, "invalid_input", "inputs.0.a"), tensors.text
        assert "a, c" in tensors.json()["error"]["message"]


# A streamed completion the engine refuses (past the context) started its 200 stream first and then
# broke the connection mid-response; it is refused before the response starts, as a whole one is.
@pytest.mark.parametrize("max_tokens", [2**64, 300])
def test_a_streamed_completion_past_the_context_is_refused_before_it_starts(
    served: Served, llm: Tenant, max_tokens: int
) -> None:
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    with served.client(llm.key) as http, nothing_left(served.platform):
        for stream in (True, False):
            refused = http.post("/v1/chat/completions", json={**chat, "stream": stream})
            assert error_of(refused) == (400, "context_length_exceeded", "messages"), refused.text
    assert _metered(served, llm.key) == set()


_SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}}
# Each refused with 400 naming the parameter, and (in the message) the schema keyword at fault.
BAD_GENERATION_PARAMETERS: list[tuple[dict[str, Any], str, str]] = [
    ({"response_format": {"type": "xml"}}, "response_format", ""),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema.json_schema", ""),
    (
        {"response_format": {**_SCHEMA_FORMAT, "json_schema": {"name": "bad name!", "schema": {}}}},
        "response_format.json_schema.json_schema.name",
        "",
    ),
    (
        {"response_format": {**_SCHEMA_FORMAT, "json_schema": {"name": "x" * 65, "schema": {}}}},
        "response_format.json_schema.json_schema.name",
        "",
    ),
    (
        {"response_format": {**_SCHEMA_FORMAT, "json_schema": {"name": "o", "schema": {"type": "objekt"}}}},
        "response_format",
        "objekt",
    ),
    (
        {
            "response_format": {
                **_SCHEMA_FORMAT,
                "json_schema": {"name": "o", "schema": {"type": "object", "propertyNames": {"pattern": "a"}}},
            }
        },
        "response_format",
        "propertyNames",
    ),
    (
        {
            "response_format": {
                **_SCHEMA_FORMAT,
                "json_schema": {"name": "o", "schema": {"type": "string", "minLength": 5, "maxLength": 1}},
            }
        },
        "response_format",
        "minLength",
    ),
    ({"logit_bias": {"5": 101}}, "logit_bias", ""),
    ({"logit_bias": {"5": -100.5}}, "logit_bias", ""),
    ({"logit_bias": {"999999": 1}}, "logit_bias", ""),
    ({"logit_bias": {"abc": 1}}, "logit_bias", ""),
    ({"logit_bias": {"-3": 1}}, "logit_bias", ""),
    ({"min_p": 1.5}, "min_p", ""),
    ({"min_p": -0.1}, "min_p", ""),
    ({"repetition_penalty": 0}, "repetition_penalty", ""),
    ({"repetition_penalty": 5e-324}, "repetition_penalty", ""),
    ({"min_tokens": -1}, "min_tokens", ""),
    ({"min_tokens": 5, "max_tokens": 2}, "min_tokens", ""),
    ({"ignore_eos": "yes"}, "ignore_eos", ""),
]


def test_bad_structured_output_and_sampling_parameters_are_refused_naming_them(
    served: Served, llm: Tenant
) -> None:
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with served.client(llm.key) as http, nothing_left(served.platform):
        for extra, param, word in BAD_GENERATION_PARAMETERS:
            for stream in (False, True):
                refused = http.post("/v1/chat/completions", json={**chat, **extra, "stream": stream})
                assert error_of(refused)[0::2] == (400, param), (extra, refused.text)
                assert word in refused.json()["error"]["message"], refused.text
        # The sampling parameters apply to completions too; response_format is for chat only.
        text = {"model": "chat", "prompt": "hi", "max_tokens": 4}
        assert error_of(http.post("/v1/completions", json={**text, "min_p": 2}))[0::2] == (400, "min_p")
        text_format = {**text, "response_format": {"type": "text"}}
        assert error_of(http.post("/v1/completions", json=text_format))[0::2] == (400, "response_format")
    with served.client(llm.key) as http:
        plain = {**chat, "response_format": {"type": "text"}, "logit_bias": {}}
        assert http.post("/v1/chat/completions", json=plain).status_code == 200
    assert len(_metered(served, llm.key)) == 1  # the one answered only
