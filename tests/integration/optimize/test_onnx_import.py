"""Raw ONNX files imported into the registry deploy and answer raw tensors; bad files are a 4xx
naming the problem and leave no version and no files behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from openmaas import Client
from openmaas.cli.main import app
from openmaas.optimize.onnx_model import export
from openmaas.sdk.errors import APIError
from tests.support.served import Served

WEIGHT = np.array([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]], dtype=np.float32)
BIAS = np.array([0.25, -0.5], dtype=np.float32)


def _linear(path: Path, *, external: bool = False) -> Path:
    """y = x @ WEIGHT + BIAS, with a dynamic batch axis, built with onnx.helper."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])]
    inits = [numpy_helper.from_array(WEIGHT, "w"), numpy_helper.from_array(BIAS, "b")]
    model = helper.make_model(
        helper.make_graph(nodes, "linear", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def _models_on_disk(served: Served) -> list[Path]:
    root = served.platform.store.root / "models"
    return list(root.rglob("*.onnx")) if root.exists() else []


def test_an_onnx_file_imports_deploys_and_predicts(served: Served, tmp_path: Path) -> None:
    tenant = served.tenant("acme")
    with Client(served.url, tenant.key) as client:
        version = client.import_model(_linear(tmp_path / "linear.onnx"), "linear")
        assert version["task"] == "tensor-inference" and version["ref"] == "linear:1"
        manifest = client.registry.version("linear:1").manifest or {}
        assert manifest["input_signature"]["inputs"] == [
            {"name": "x", "dtype": "tensor(float)", "shape": [None, 3], "batch": "dynamic"}
        ]
        client.deployments.create("linear:1", name="lin")
        client.deployments.wait_ready("lin", timeout=60)
    rows = [[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]
    with served.client(tenant.key) as http:
        answer = http.post("/v1/deployments/lin/predict", json={"inputs": rows})
        assert answer.status_code == 200, answer.text
        expected = np.array(rows, dtype=np.float32) @ WEIGHT + BIAS
        got = [p["outputs"]["y"] for p in answer.json()["predictions"]]
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        named = http.post("/v1/deployments/lin/predict", json={"inputs": [{"x": rows[0]}]})
        assert named.json()["predictions"][0]["outputs"]["y"] == pytest.approx(expected[0].tolist())
        wrong = http.post("/v1/deployments/lin/predict", json={"inputs": [[1.0, 2.0]]})
        assert wrong.status_code == 422 and wrong.json()["error"]["param"] == "inputs.0.x"
        text = http.post("/v1/deployments/lin/predict", json={"inputs": [["a", "b", "c"]]})
        assert text.status_code == 422 and text.json()["error"]["param"] == "inputs.0.x"
        optimise = http.post("/v1/optimizations", json={"model": "linear:1", "method": "dynamic-int8"})
        assert optimise.status_code == 422 and optimise.json()["error"]["code"] == "not_optimizable"


def test_a_torch_exported_model_imports_through_the_cli(served: Served, tmp_path: Path) -> None:
    tenant = served.tenant("acme")
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    export(model, torch.randn(2, 4), tmp_path / "mlp.onnx")
    env = {"OPENMAAS_URL": served.url, "OPENMAAS_API_KEY": tenant.key, "OPENMAAS_CONFIG_DIR": str(tmp_path)}
    cli = CliRunner().invoke(
        app, ["models", "import", str(tmp_path / "mlp.onnx"), "--name", "mlp", "--json"], env=env
    )
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["task"] == "tensor-inference"
    with Client(served.url, tenant.key) as client:
        outputs = (client.registry.version("mlp:1").manifest or {})["output_signature"]["outputs"]
    assert outputs == [{"name": "output", "dtype": "tensor(float)", "shape": [None, 3], "batch": "dynamic"}]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"this is not a protobuf \xff\xfe", "invalid_onnx"),
        (b"", "invalid_onnx"),
    ],
)
def test_garbage_is_refused_and_nothing_is_left(served: Served, content: bytes, code: str) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as http:
        answer = http.post("/v1/registry/imports", params={"name": "bad", "format": "onnx"}, content=content)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == code and answer.json()["error"]["param"] == "file"
        assert http.get("/v1/registry/models/bad").status_code == 404
    assert _models_on_disk(served) == []


def test_external_data_and_invalid_graphs_are_refused(served: Served, tmp_path: Path) -> None:
    tenant = served.tenant("acme")
    external = _linear(tmp_path / "ext.onnx", external=True)  # its weights in w.bin beside it
    broken = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["missing"], ["y"])],
            "broken",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    with Client(served.url, tenant.key) as client:
        with pytest.raises(APIError) as refused:
            client.import_model(external, "ext")
        assert refused.value.code == "external_data_refused"
        onnx.save(broken, str(tmp_path / "broken.onnx"))
        with pytest.raises(APIError) as invalid:
            client.import_model(tmp_path / "broken.onnx", "broken")
        assert invalid.value.code == "invalid_onnx" and "checker" in str(invalid.value)
        with pytest.raises(APIError) as task:
            client.import_model(_linear(tmp_path / "l.onnx"), "lin", task="tabular-classification")
        assert task.value.param == "task"
    assert _models_on_disk(served) == []
