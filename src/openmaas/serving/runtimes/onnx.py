"""Serving ONNX versions with onnxruntime.

An optimised version (ONNX file + its parent's fitted preprocessing) is a `PredictorRuntime`
whose replicas call an onnxruntime session instead of a torch module: the same input checks,
preprocessing, batcher and response shape as its parent. An imported ONNX file without
preprocessing (`tensor-inference`) takes raw numeric tensors, one per row (or named inputs), and
answers each row's named outputs. A number its input's dtype cannot hold (1e39 for float32) is
refused naming its row and input; a row whose outputs hold NaN or infinity is refused too, never
answered with nulls.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from openmaas.errors import InvalidRequest, ValidationFailed
from openmaas.optimize import onnx_model
from openmaas.registry.manifest import read_manifest
from openmaas.serving.batcher import Batcher
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.serving.runtimes.predictor import PredictorRuntime
from openmaas.serving.signatures import listed, non_finite_output
from openmaas.training.predictor import Predictor

MAX_ORT_THREADS = 2  # small models gain nothing past two intra-op threads and replicas share cores
DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def load_onnx_runtime(task: str, folder: Path, config: RuntimeConfig) -> PredictorRuntime:
    if read_manifest(folder)["input_signature"].get("kind") == "tensor":
        return TensorRuntime(folder, config)
    return OnnxPredictorRuntime(folder, config)


class OnnxPredictorRuntime(PredictorRuntime):
    """A trained model's runtime, with the model call made by onnxruntime."""

    def _load_predictor(self, folder: Path, threads: int) -> Predictor:
        return onnx_model.load_predictor(folder, min(threads, MAX_ORT_THREADS))

    def explainer(self, limits: Any) -> NoReturn:
        raise _no_explanations(self.version)


class TensorCheck:
    """Rows of raw tensors: a nested list of numbers (one-input models) or an object of them by
    input name, each of the input's shape (without the batch axis when that axis is dynamic)."""

    def __init__(self, inputs: list[dict[str, Any]]) -> None:
        self.inputs = inputs
        self.names = [str(spec["name"]) for spec in inputs]

    def check(self, rows: list[Any]) -> list[Any]:
        return [self._row(index, row) for index, row in enumerate(rows)]

    def _row(self, index: int, row: Any) -> dict[str, np.ndarray]:
        if type(row) is not dict:
            if len(self.names) > 1:
                raise _error(index, f"must be an object of inputs {self.names}")
            row = {self.names[0]: row}
        missing = [name for name in self.names if name not in row]
        unknown = sorted(set(row) - set(self.names))
        if missing or unknown:
            problem = f"missing {listed(missing)}" if missing else f"unknown {listed(unknown)}"
            raise _error(
                index, f"{problem}; the model's inputs are {listed(self.names)}", (missing or unknown)[0]
            )
        return {str(spec["name"]): _tensor(index, spec, row[spec["name"]]) for spec in self.inputs}


def _tensor(index: int, spec: dict[str, Any], value: Any) -> np.ndarray:
    name = str(spec["name"])
    dtype = DTYPES[spec["dtype"]]
    try:
        with np.errstate(over="ignore"):  # a number past the float type becomes inf: refused below
            array: np.ndarray = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise _error(index, f"must be a (nested) list of numbers for {spec['dtype']}", name) from None
    if array.dtype == object:
        raise _error(index, "must be a rectangular (nested) list of numbers", name)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        largest = float(np.finfo(dtype).max)
        raise _error(index, f"holds a number past what {spec['dtype']} holds (±{largest:.6g})", name)
    shape = spec["shape"][1:] if spec["batch"] == "dynamic" else spec["shape"]
    if array.ndim != len(shape) or any(
        isinstance(dim, int) and dim != got for dim, got in zip(shape, array.shape, strict=True)
    ):
        raise _error(index, f"must have shape {shape} (null: any size), not {list(array.shape)}", name)
    return array


def _no_explanations(version: str) -> InvalidRequest:
    # Attributions need gradients through the model; an onnxruntime session has none.
    return InvalidRequest(
        f"{version or 'this model'} runs on ONNX Runtime, which has no gradients to explain it with; "
        "explain the torch version it was optimised from.",
        param="deployment",
        code="explanations_unsupported",
    )


def _error(index: int, message: str, field: str | None = None) -> ValidationFailed:
    param = f"inputs.{index}" + (f".{field}" if field is not None else "")
    return ValidationFailed(f"{param}: {message}", param=param, code="invalid_input")


class TensorRuntime(PredictorRuntime):
    """An imported ONNX file without preprocessing: raw tensors in, named outputs out."""

    def __init__(self, folder: Path, config: RuntimeConfig) -> None:
        manifest = read_manifest(folder)
        self.task = str(manifest["task"])
        self.version = config.model_version
        self.signature = manifest["input_signature"]
        self.labels = []
        self.item_count = 0
        replicas = max(1, config.replicas)
        threads = max(1, min(MAX_ORT_THREADS, config.engine.num_threads or MAX_ORT_THREADS))
        path = folder / manifest["files"]["onnx"]
        self.sessions = [onnx_model.session(path, threads) for _ in range(replicas)]
        self.dynamic_batch = all(spec["batch"] == "dynamic" for spec in self.signature["inputs"])
        self.max_batch_size = config.max_batch_size
        self.check_inputs = TensorCheck(list(self.signature["inputs"]))
        self.batcher = Batcher(
            self._run_batch,
            replicas=replicas,
            max_batch_size=self.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue,
            name=f"onnx-{folder.name}",
        )

    def explainer(self, limits: Any) -> NoReturn:
        raise _no_explanations(self.version)

    def close(self) -> None:
        self.batcher.close()

    def check(self, inputs: Any, top_k: Any) -> tuple[list[Any], int | None]:
        if top_k is not None:
            raise ValidationFailed("top_k does not apply to tensor models.", param="top_k")
        return super().check(inputs, None)

    def _run_batch(self, replica: int, rows: list[Any], top_ks: list[Any]) -> Sequence[Any]:
        session = self.sessions[replica]
        names = [output.name for output in session.get_outputs()]
        same = all(row[k].shape == rows[0][k].shape for row in rows for k in rows[0])
        if not (self.dynamic_batch and same):
            return [self._one(session, names, index, row) for index, row in enumerate(rows)]
        feed = {name: np.stack([row[name] for row in rows]) for name in rows[0]}
        outputs = session.run(None, feed)
        _check_finite(outputs)
        return [
            {"outputs": {name: out[i].tolist() for name, out in zip(names, outputs, strict=True)}}
            for i in range(len(rows))
        ]

    def _one(self, session: Any, names: list[str], index: int, row: dict[str, np.ndarray]) -> dict[str, Any]:
        feed = {name: (value[None] if self.dynamic_batch else value) for name, value in row.items()}
        outputs = session.run(None, feed)
        if not all(np.isfinite(out).all() for out in _floats(outputs)):
            raise non_finite_output(index)
        shown = [out[0] if self.dynamic_batch else out for out in outputs]
        return {"outputs": {name: out.tolist() for name, out in zip(names, shown, strict=True)}}


def _floats(outputs: list[Any]) -> list[np.ndarray]:
    return [out for out in outputs if isinstance(out, np.ndarray) and out.dtype.kind == "f"]


def _check_finite(outputs: list[Any]) -> None:
    """`non_finite_output` for the first row (axis 0) whose float outputs hold NaN or infinity."""
    floats = _floats(outputs)
    if all(np.isfinite(out).all() for out in floats):
        return
    finite = np.logical_and.reduce([np.isfinite(out.reshape(len(out), -1)).all(axis=1) for out in floats])
    raise non_finite_output(int(np.argmin(finite)))
