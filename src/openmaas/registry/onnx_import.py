"""Imports of raw ONNX files into the registry, as `tensor-inference` versions served by
onnxruntime with raw numeric tensors in and named outputs out (no preprocessing).

The file is checked before anything is registered: it must parse as an ONNX model with all its
weights inside (external-data references are refused, never followed, so nothing outside the
upload is read), pass `onnx.checker`, have numeric inputs and outputs, and open in an
onnxruntime session. Its input and output names, dtypes and shapes become the signature.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from openmaas import errors
from openmaas.registry.manifest import FORMAT_VERSION, MANIFEST
from openmaas.tasks import TENSOR_INFERENCE

ONNX_FILE = "model.onnx"
# protobuf cannot parse a message of 2 GiB or more; larger models need external data (refused).
MAX_ONNX_BYTES = 2**31 - 1
NUMERIC_TYPES = {1: "float", 11: "double", 10: "float16", 7: "int64", 6: "int32", 9: "bool"}


def _bad(message: str, code: str = "invalid_onnx") -> errors.ValidationFailed:
    return errors.ValidationFailed(message, param="file", code=code)


def install(upload: Path, dest: Path, *, task: str) -> dict[str, Any]:
    """Check the ONNX file `upload` and move it into the new artifact folder `dest` with its
    manifest; returns the manifest. On any error `dest` is removed and nothing is left."""
    if task != TENSOR_INFERENCE:
        raise errors.ValidationFailed(
            f"an ONNX file without preprocessing imports as {TENSOR_INFERENCE!r}, not {task!r}",
            param="task",
        )
    if upload.stat().st_size > MAX_ONNX_BYTES:
        raise errors.PayloadTooLarge(f"an ONNX file is at most {MAX_ONNX_BYTES} bytes", param="file")
    manifest = inspect(upload)
    dest.mkdir(parents=True)
    try:
        shutil.move(upload, dest / ONNX_FILE)
        (dest / MANIFEST).write_text(json.dumps(manifest, indent=2))
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return manifest


def inspect(path: Path) -> dict[str, Any]:
    """The manifest of a checked ONNX file, or ValidationFailed naming what is wrong."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise _bad(f"the upload is not an ONNX model: {exc}") from exc
    if not model.graph.node:
        raise _bad("the ONNX model has no graph nodes (is this an ONNX file?)")
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise _bad(
            f"tensor {external[0]!r} keeps its data in an external file; upload a model with every "
            "weight inside the .onnx file (onnx.save(..., save_as_external_data=False))",
            "external_data_refused",
        )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise _bad(f"onnx.checker refused the model: {str(exc).splitlines()[0]}") from exc
    weights = {t.name for t in model.graph.initializer}
    inputs = [_tensor_spec(v) for v in model.graph.input if v.name not in weights]
    outputs = [_tensor_spec(v) for v in model.graph.output]
    if not inputs or not outputs:
        raise _bad("the ONNX model needs at least one input and one output")
    _open_session(path)
    return {
        "format_version": FORMAT_VERSION,
        "task": TENSOR_INFERENCE,
        "source": "onnx",
        "runtime": "onnxruntime",
        "architecture": {"name": "onnx", "producer": model.producer_name, "graph": model.graph.name},
        "opsets": {entry.domain or "ai.onnx": entry.version for entry in model.opset_import},
        "input_signature": {"kind": "tensor", "inputs": inputs},
        "output_signature": {"kind": "tensor", "outputs": outputs},
        "files": {"onnx": ONNX_FILE},
        "size_bytes": path.stat().st_size,
        "metrics": {},
        "lineage": {},
    }


def _tensor_spec(value: Any) -> dict[str, Any]:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise _bad(f"{value.name!r} is a {kind}; only tensor inputs and outputs are served")
    tensor = value.type.tensor_type
    if tensor.elem_type not in NUMERIC_TYPES:
        raise _bad(f"{value.name!r} has element type {tensor.elem_type}; only numeric tensors are served")
    if not tensor.HasField("shape"):
        raise _bad(f"{value.name!r} has no declared shape")
    shape = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim]
    return {
        "name": value.name,
        "dtype": f"tensor({NUMERIC_TYPES[tensor.elem_type]})",
        "shape": shape,
        "batch": "dynamic" if shape and shape[0] is None else "fixed",
    }


def _open_session(path: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise _bad(
            f"onnxruntime cannot run the model: {str(exc).splitlines()[0]}", "onnx_not_runnable"
        ) from exc
