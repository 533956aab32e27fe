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
from openmaas.tasks import TRAINED_TASKS, Task

ONNX_FP32 = "onnx-fp32"
DYNAMIC_INT8 = "dynamic-int8"
STATIC_INT8 = "static-int8"
METHODS = (ONNX_FP32, DYNAMIC_INT8, STATIC_INT8, "prune-N (1-95)")
_PRUNE = re.compile(r"prune-([0-9]{1,2})")
# Tasks whose test split `optimize.evaluation` can rebuild, so a result's metric is measured.
# Recommendation is not among them: its models rank every item (not a forward pass to export)
# and its test split is held-out interactions, not rows.
OPTIMIZABLE_TASKS = TRAINED_TASKS - {Task.RECOMMENDATION}
ARCHITECTURES = frozenset({"mlp", "lstm", "transformer", "small_resnet"})
# Methods that make an architecture worse, as measured on this platform's models (CPU, one
# thread, batch 32): refused unless the request forces them.
HARMFUL = {
    ("small_resnet", DYNAMIC_INT8): (
        "dynamic int8 runs convolutions as ConvInteger with activations quantised on the fly: "
        "measured about 6x slower than the fp32 ONNX export of the same CNN (and slower than torch); "
        "use onnx-fp32 (the fastest measured) or static-int8 (calibrated QDQ convolutions, smaller), "
        "or force=true to measure it anyway"
    ),
}


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


def check_fits(task: str, architecture: str, method: Method, *, force: bool = False) -> None:
    """Refuse a method that does not fit the model (measured in this repository, not assumed)."""
    if task not in OPTIMIZABLE_TASKS or architecture not in ARCHITECTURES:
        raise errors.ValidationFailed(
            f"{task} models ({architecture}) cannot be optimised: optimisable are "
            f"{sorted(OPTIMIZABLE_TASKS)} models of architectures {sorted(ARCHITECTURES)}",
            param="model",
            code="not_optimizable",
        )
    harm = HARMFUL.get((architecture, method.name))
    if harm is not None and not force:
        raise errors.ValidationFailed(harm, param="method", code="method_not_useful")
