"""The part every classification family shares once its inputs are tensors: split-aware training
through the shared loop with cross-entropy, validation accuracy for early stopping, and test
metrics. Families differ only in how raw data becomes tensors and which model they build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openmaas.training.config import CommonConfig
from openmaas.training.context import TrainingContext
from openmaas.training.loop import LoopResult, LoopSettings, train_loop
from openmaas.training.metrics import classification_metrics

EVAL_BATCH = 512


@dataclass(frozen=True)
class SplitTensors:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def predict_batched(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The model's outputs for `inputs`, on the CPU (a data-parallel rank's model may be on a GPU)."""
    model.eval()
    # A model with no parameters of its own (an optimised candidate: ONNX, dynamically quantised) runs
    # on the CPU.
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        return torch.cat(
            [model(inputs[i : i + EVAL_BATCH].to(device)).cpu() for i in range(0, len(inputs), EVAL_BATCH)]
        )


def probabilities(model: nn.Module, inputs: torch.Tensor) -> np.ndarray:
    return torch.softmax(predict_batched(model, inputs), dim=1).numpy()


def loop_settings(config: CommonConfig, monitor: str, mode: str = "max") -> LoopSettings:
    return LoopSettings(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        seed=config.seed,
        patience=config.patience,
        checkpoint_every=config.checkpoint_every,
        checkpoint_min_seconds=config.checkpoint_min_seconds,
        checkpoint_overhead=config.checkpoint_overhead,
        monitor=monitor,
        mode="max" if mode == "max" else "min",
    )


def _cross_entropy(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    inputs, targets = batch
    return F.cross_entropy(model(inputs), targets)


def train_classifier(
    model: nn.Module, data: SplitTensors, config: CommonConfig, context: TrainingContext
) -> tuple[LoopResult, dict[str, object]]:
    """Train with the shared loop (monitoring validation accuracy) and evaluate on the test split."""
    val_x, val_y = (data.val_x, data.val_y) if len(data.val_y) else (data.train_x, data.train_y)

    def evaluate(trained: nn.Module) -> dict[str, float]:
        probs = probabilities(trained, val_x)
        loss = F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)), val_y)
        return {"accuracy": float((probs.argmax(axis=1) == val_y.numpy()).mean()), "loss": float(loss)}

    result = train_loop(
        model,
        (data.train_x, data.train_y),
        _cross_entropy,
        evaluate,
        loop_settings(config, "loss", mode="min"),
        context,
    )
    metrics = classification_metrics(data.test_y.numpy(), probabilities(model, data.test_x))
    return result, metrics
