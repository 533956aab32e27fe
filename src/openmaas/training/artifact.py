"""The artifact of a model trained here: a version folder holding `manifest.json` (task,
architecture config, input/output signature, preprocessing spec and fitted state, metrics, curves,
training params; see `registry.manifest`), `model.safetensors` (weights) and
`preprocessing.safetensors` (fitted arrays).

Writing is atomic (a staging folder renamed into place); reading never unpickles anything: the
architecture is rebuilt from its JSON config and the weights are loaded with safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from openmaas.datasets.preprocessing import preprocessor_from_state
from openmaas.errors import Conflict
from openmaas.registry.manifest import FORMAT_VERSION, MANIFEST, read_manifest
from openmaas.training.models import build_model
from openmaas.training.predictor import Predictor
from openmaas.training.result import TrainedModel

WEIGHTS = "model.safetensors"
PREPROCESSING = "preprocessing.safetensors"


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or strided storage; clone each tensor into its own block.
    return {name: tensor.detach().clone().contiguous() for name, tensor in state.items()}


def build_manifest(trained: TrainedModel, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    meta, _ = trained.preprocessor.state()
    return {
        "format_version": FORMAT_VERSION,
        "task": trained.task,
        "architecture": trained.architecture,
        "input_signature": trained.input_signature,
        "output_signature": trained.output_signature,
        "labels": trained.labels,
        "preprocessing": {"spec": trained.preprocessing_spec, "state": meta},
        "metrics": trained.metrics,
        "baseline_metrics": trained.baseline_metrics,
        "history": trained.history,
        "training_params": trained.params,
        "files": {"weights": WEIGHTS, "preprocessing": PREPROCESSING},
        "lineage": lineage or {},
    }


def write_artifact(
    trained: TrainedModel, dest: Path | str, lineage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the artifact folder `dest` (which must not exist yet); return its manifest.

    `lineage` (dataset version, job, parent version: whatever the registry tracks) is stored as is.
    """
    dest = Path(dest)
    if dest.exists():
        raise Conflict(f"an artifact already exists at {dest}", param="dest")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        manifest = build_manifest(trained, lineage)
        save_file(_tensors(trained.model.state_dict()), str(staging / WEIGHTS))
        _, arrays = trained.preprocessor.state()
        save_file(_tensors(arrays), str(staging / PREPROCESSING))
        (staging / MANIFEST).write_text(
            json.dumps(manifest, indent=2, allow_nan=False, default=_json_default)
        )
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_artifact(path: Path | str) -> Predictor:
    """Load an artifact folder into a ready-to-predict Predictor."""
    path = Path(path)
    manifest = read_manifest(path)
    model = build_model(manifest["architecture"])
    model.load_state_dict(load_file(str(path / WEIGHTS)), strict=True)
    preprocessor = preprocessor_from_state(
        manifest["preprocessing"]["state"], load_file(str(path / PREPROCESSING))
    )
    default_k = int(manifest["output_signature"].get("k", 10))
    return Predictor(
        manifest["task"], model, preprocessor, manifest.get("labels"), default_k=default_k, manifest=manifest
    )
