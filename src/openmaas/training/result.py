"""What a finished training run produces: the trained model with everything the artifact needs
(architecture config, fitted preprocessing, labels, signatures, test metrics, curves, params)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from openmaas.datasets.preprocessing.base import FittedPreprocessor


@dataclass
class TrainedModel:
    task: str
    architecture: dict[str, Any]
    model: nn.Module
    preprocessor: FittedPreprocessor
    params: dict[str, Any]
    preprocessing_spec: dict[str, Any]
    input_signature: dict[str, Any]
    output_signature: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    labels: list[str] | None = None
    baseline_metrics: dict[str, Any] | None = None
    resumed_from_epoch: int = 0  # epochs restored from a checkpoint rather than trained in this call
    extra: dict[str, Any] = field(default_factory=dict)
