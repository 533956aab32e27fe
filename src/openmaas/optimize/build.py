"""Building one optimised artifact from a trained one, measured side by side with its parent.

The parent and the result are measured the same way in the same process: the weights file's size
(and compressed size), the model call's latency p50 at batch 1 and batch 32 on one thread, and
the test-set metrics on the parent's own test split. The result's folder appears at `dest` only
when its metric is within the allowed drop (or the request forced it).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from openmaas.optimize import onnx_model, pruning
from openmaas.optimize.evaluation import TestSet, evaluate, test_set
from openmaas.optimize.measure import (
    LATENCY_BATCHES,
    Verdict,
    file_sizes,
    finite_json,
    judge,
    latency_notes,
    p50_ms,
    refuse,
)
from openmaas.optimize.methods import Method
from openmaas.registry.manifest import MANIFEST, read_manifest
from openmaas.training.artifact import PREPROCESSING, WEIGHTS

Progress = Callable[[str, str], None]
LATENCY_PROTOCOL = (
    "median of 30 timed model calls after 5 warm-up calls, one CPU thread, on encoded test rows; "
    "excludes preprocessing, batching and HTTP"
)


def measure(model: nn.Module, weights: Path, test: TestSet) -> dict[str, Any]:
    """Size, latency and test metrics of `model`, whose weights file is `weights`."""
    rows = test.test_x
    latency = {}
    with torch.inference_mode():
        for batch in LATENCY_BATCHES:
            x = rows[torch.arange(batch) % len(rows)].contiguous()
            latency[f"p50_batch_{batch}"] = p50_ms(functools.partial(model, x))
    return {"size": file_sizes(weights), "latency_ms": latency, "metrics": evaluate(model, test)}


def build_optimized(
    parent: Path,
    dataset: Path,
    dest: Path,
    *,
    staging_root: Path,
    method: Method,
    max_drop: float,
    force: bool,
    progress: Progress,
    parent_ref: str,
) -> dict[str, Any]:
    """Optimise the artifact at `parent` with `method` into `dest`, building in a folder under
    `staging_root` (on `dest`'s filesystem: it is renamed into place); returns the new manifest.

    Raises ValidationFailed (code `metric_drop`) and leaves nothing when the metric drops too much."""
    torch.set_num_threads(1)  # latencies are compared on one thread, as ONNX Runtime runs them here
    manifest = read_manifest(parent)
    progress("prepare", "Rebuilding the parent's test split.")
    source = onnx_model.load_predictor(parent)
    test = test_set(dataset, manifest, source.preprocessor)
    progress("measure-parent", f"Measuring the parent {parent_ref}.")
    before = measure(source.model, parent / manifest["files"]["weights"], test)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{dest.name}-", dir=staging_root))
    try:
        shutil.copyfile(parent / PREPROCESSING, staging / PREPROCESSING)
        if method.onnx:
            files, extra = _onnx(source.model, test, staging, method, progress)
            candidate: nn.Module = onnx_model.OrtModule(staging / files["onnx"])
        else:
            candidate = copy.deepcopy(source.model)
            files, extra = _pruned(candidate, staging, method, progress)
        progress("measure", f"Measuring the {method.name} result.")
        weights = staging / (files.get("onnx") or files["weights"])
        after = measure(candidate, weights, test)
        verdict = judge(manifest["task"], before["metrics"], after["metrics"], max_drop=max_drop, force=force)
        if not verdict.accepted:
            raise refuse(verdict, max_drop)
        optimization = {
            "method": method.name,
            "max_metric_drop": max_drop,
            "parent": {"ref": parent_ref, **before},
            "result": after,
            "metric_change": verdict.to_dict(),
            "latency_protocol": LATENCY_PROTOCOL,
            **extra,
            "notes": [*extra.get("notes", []), *_notes(before, after, verdict)],
        }
        result = finite_json(_manifest(manifest, files, after["metrics"], optimization, method))
        (staging / MANIFEST).write_text(json.dumps(result, indent=2, allow_nan=False))
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _notes(before: dict[str, Any], after: dict[str, Any], verdict: Verdict) -> list[str]:
    """Where the result is worse than its parent, said plainly (measured, not assumed)."""
    notes = latency_notes(before["latency_ms"], after["latency_ms"])
    if after["size"]["bytes"] > before["size"]["bytes"]:
        notes.append(
            f"the result's file is {after['size']['bytes']} bytes, larger than the parent's "
            f"{before['size']['bytes']} (the format's overhead outweighs any saving at this size)"
        )
    if verdict.forced:
        notes.append(f"kept with force=true although {verdict.metric} dropped by {verdict.drop:.4f}")
    return notes


def _manifest(
    parent: dict[str, Any],
    files: dict[str, str],
    metrics: dict[str, Any],
    optimization: dict[str, Any],
    method: Method,
) -> dict[str, Any]:
    manifest = {**parent, "files": {**files, "preprocessing": PREPROCESSING}, "metrics": metrics}
    manifest["baseline_metrics"] = parent.get("metrics")
    manifest["optimization"] = optimization
    if method.onnx:
        manifest["runtime"] = onnx_model.RUNTIME
    return manifest


def _onnx(
    model: nn.Module, test: TestSet, staging: Path, method: Method, progress: Progress
) -> tuple[dict[str, str], dict[str, Any]]:
    progress("export", "Exporting to ONNX (torch.onnx.export, dynamo=True, dynamic batch axis).")
    exported = staging / ".export.onnx"
    sample = test.test_x[torch.arange(2) % len(test.test_x)].contiguous()  # batch 1 would specialise
    onnx_model.export(model, sample, exported)
    final = staging / onnx_model.ONNX_FILE
    extra: dict[str, Any] = {"export": {"dynamo": True, "dynamic_axes": {"input": {"0": "batch"}}}}
    if method.quantize == "dynamic":
        progress("quantize", "Quantising weights to int8 (ONNX Runtime quantize_dynamic).")
        onnx_model.quantize_dynamic(exported, final)
        exported.unlink()
        extra["quantization"] = {"mode": "dynamic", "weights": "int8"}
    elif method.quantize == "static":
        progress("calibrate", f"Calibrating activation ranges on {len(test.calibration_x)} training rows.")
        progress("quantize", "Quantising weights and activations to int8 (ONNX Runtime quantize_static).")
        onnx_model.quantize_static(exported, final, test.calibration_x)
        exported.unlink()
        extra["quantization"] = {
            "mode": "static",
            "format": "QDQ",
            "ops": list(onnx_model.STATIC_OPS),
            "calibration_rows": len(test.calibration_x),
        }
    else:
        exported.rename(final)
    return {"onnx": onnx_model.ONNX_FILE}, extra


def _pruned(
    model: nn.Module, staging: Path, method: Method, progress: Progress
) -> tuple[dict[str, str], dict[str, Any]]:
    progress("prune", f"Zeroing the {method.prune_fraction:.0%} smallest weights of each layer.")
    sparsity = pruning.prune(model, method.prune_fraction)
    state = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(staging / WEIGHTS))
    return {"weights": WEIGHTS}, {
        "pruning": {**sparsity, "kind": "unstructured-magnitude"},
        "notes": [pruning.NOTE],
    }
