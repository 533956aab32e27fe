"""Model architectures, and `build_model`, which rebuilds one from the JSON architecture config
stored in a model artifact (a name plus constructor arguments; no code is loaded)."""

from __future__ import annotations

from typing import Any

from torch import nn

from openmaas.errors import ValidationFailed
from openmaas.training.models.factorization import MatrixFactorization
from openmaas.training.models.mlp import MLP
from openmaas.training.models.resnet import SmallResNet
from openmaas.training.models.text import LSTMClassifier, TransformerClassifier

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "small_resnet": SmallResNet,
    "lstm": LSTMClassifier,
    "transformer": TransformerClassifier,
    "matrix_factorization": MatrixFactorization,
}


def build_model(architecture: dict[str, Any]) -> nn.Module:
    """`architecture` is {"name": ..., "args": {...}}, as written into the manifest."""
    cls = ARCHITECTURES.get(architecture.get("name", ""))
    if cls is None:
        raise ValidationFailed(f"unknown architecture {architecture.get('name')!r}", param="architecture")
    return cls(**architecture.get("args", {}))


__all__ = [
    "ARCHITECTURES",
    "MLP",
    "LSTMClassifier",
    "MatrixFactorization",
    "SmallResNet",
    "TransformerClassifier",
    "build_model",
]
