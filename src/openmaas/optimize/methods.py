"""The optimisation methods a request may name, and which architectures each one fits.

`onnx-fp32` exports the model with `torch.onnx.export(dynamo=True)`; `dynamic-int8` and
`static-int8` quantise that export with ONNX Runtime's quantiser; `prune-N` zeroes the N% smallest
weights of every Linear/Conv layer and keeps a torch safetensors artifact. No torch here: the API
server parses methods before anything is queued.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from openmaas import errors

ONNX_FP32 = "onnx-fp32"
DYNAMIC_INT8 = "dynamic-int8"
STATIC_INT8 = "static-int8"
METHODS = (ONNX_FP32, DYNAMIC_INT8, STATIC_INT8, "prune-N (1-95)")
_PRUNE = re.compile(r"prune-(\d{1,2})")
# Tasks whose test split `optimize.evaluation` can rebuild, so a result's metric is measured.
OPTIMIZABLE_TASKS = frozenset({"tabular-classification", "tabular-regression"})


@dataclass(frozen=True)
class Method:
    name: str
    onnx: bool  # the result is an ONNX file served by ONNX Runtime
    quantize: str | None = None  # "dynamic" | "static"
    prune_fraction: float = 0.0


def parse_method(value: str) -> Method:
    """The method named `value`, or ValidationFailed naming `method`."""
    if value == ONNX_FP32:
        return Method(value, onnx=True)
    if value == DYNAMIC_INT8:
        return Method(value, onnx=True, quantize="dynamic")
    if value == STATIC_INT8:
        return Method(value, onnx=True, quantize="static")
    match = _PRUNE.fullmatch(value)
    if match and 1 <= int(match.group(1)) <= 95:
        return Method(value, onnx=False, prune_fraction=int(match.group(1)) / 100)
    raise errors.ValidationFailed(
        f"unknown method {value!r}; methods: {', '.join(METHODS)}", param="method", code="unknown_method"
    )


def check_fits(task: str, architecture: str, method: Method) -> None:
    """Refuse a method that does not fit the model (measured in this repository, not assumed)."""
    if task not in OPTIMIZABLE_TASKS:
        raise errors.ValidationFailed(
            f"{task} models cannot be optimised yet: only {sorted(OPTIMIZABLE_TASKS)} models have a "
            "test split the optimisation job can rebuild to measure the result's metric",
            param="model",
            code="not_optimizable",
        )
    if architecture != "mlp":
        raise errors.ValidationFailed(
            f"architecture {architecture!r} cannot be optimised with {method.name}", param="method"
        )
