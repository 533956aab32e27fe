"""ONNX files of trained models: export with `torch.onnx.export(dynamo=True)` and a dynamic batch
axis, int8 quantisation with ONNX Runtime's quantiser (never torch.ao), and `OrtModule`, an
onnxruntime session behind the `nn.Module` call the Predictor and the serving runtime make, so an
ONNX version predicts through exactly the same preprocessing and output code as its parent.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import load_file
from torch import nn

from openmaas.datasets.preprocessing import preprocessor_from_state
from openmaas.registry.manifest import read_manifest
from openmaas.training.artifact import PREPROCESSING, load_artifact
from openmaas.training.predictor import Predictor

ONNX_FILE = "model.onnx"
RUNTIME = "onnxruntime"
INPUT, OUTPUT = "input", "output"
DEFAULT_THREADS = 1
STATIC_OPS = ("MatMul", "Gemm", "Conv")


def export(model: nn.Module, sample: torch.Tensor, dest: Path) -> None:
    """Export `model` (one float tensor in, one out) with a dynamic batch axis."""
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        # torch.export's own deprecation chatter (pytree specs, LSTM flat weights) says nothing
        # about the model; real export problems raise.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        program = torch.onnx.export(
            model.eval(),
            (sample,),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            input_names=[INPUT],
            output_names=[OUTPUT],
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(dest))


def quantize_dynamic(source: Path, dest: Path) -> None:
    """int8 weights, activations quantised on the fly: what helps Linear/LSTM-heavy models."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8)


def quantize_static(source: Path, dest: Path, calibration: torch.Tensor, batch: int = 32) -> None:
    """int8 weights and activations, activation ranges calibrated on `calibration` rows.

    Only MatMul, Gemm and Conv are quantised: the MLP's output un-scaling (Mul/Add by per-output
    vectors) quantised per axis breaks ONNX Runtime's QuantizeLinear (measured), and gains nothing."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            dtype = np.int64 if calibration.dtype == torch.int64 else np.float32
            rows = calibration.numpy().astype(dtype)
            self._batches: Iterator[dict[str, np.ndarray]] = iter(
                {INPUT: rows[i : i + batch]} for i in range(0, len(rows), batch)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    prepared = dest.with_name(f".{dest.name}.pre.onnx")
    try:
        with _quiet():
            quant_pre_process(str(source), str(prepared))
            quantize_static(
                str(prepared),
                str(dest),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(STATIC_OPS),
            )
    finally:
        prepared.unlink(missing_ok=True)


def session(path: Path, threads: int = DEFAULT_THREADS) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtModule(nn.Module):
    """An ONNX Runtime session called like the torch model it was exported from."""

    def __init__(self, path: Path, threads: int = DEFAULT_THREADS) -> None:
        super().__init__()
        self.session = session(path, threads)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        # Token ids stay integers; everything else is float32, as the export saw it.
        self.input_dtype = np.int64 if first.type == "tensor(int64)" else np.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: x.detach().numpy().astype(self.input_dtype, copy=False)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def is_onnx(manifest: dict[str, Any]) -> bool:
    return manifest.get("runtime") == RUNTIME


def load_predictor(folder: Path, threads: int = DEFAULT_THREADS) -> Predictor:
    """A Predictor for a trained or optimised artifact, whichever runtime its manifest names."""
    manifest = read_manifest(folder)
    if not is_onnx(manifest):
        return load_artifact(folder)
    files = manifest["files"]
    preprocessor = preprocessor_from_state(
        manifest["preprocessing"]["state"], load_file(str(folder / files.get("preprocessing", PREPROCESSING)))
    )
    model = OrtModule(folder / files["onnx"], threads)
    default_k = int(manifest["output_signature"].get("k", 10))
    return Predictor(
        manifest["task"], model, preprocessor, manifest.get("labels"), default_k=default_k, manifest=manifest
    )


class _quiet:
    """ONNX Runtime's quantiser logs advice on the root logger at WARNING; keep job logs readable."""

    def __enter__(self) -> None:
        self._level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *_: object) -> None:
        logging.getLogger().setLevel(self._level)
