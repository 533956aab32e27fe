"""Magnitude pruning: the smallest `fraction` of each Linear/Conv layer's weights set to zero.

Honest about what it buys: unstructured zeros leave a dense tensor of the same shape, so the
safetensors file is the same size and dense kernels are no faster; only compression (and sparse
kernels, which this platform does not use) benefit. The job measures and reports all of that.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

PRUNED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
NOTE = (
    "Unstructured magnitude pruning zeroes weights inside dense tensors: the weights file keeps "
    "its size and dense CPU kernels do the same work, so expect no speed-up; the zeros only help "
    "compression (see compressed_bytes) and sparse kernels, which this platform does not use."
)


def prune(model: nn.Module, fraction: float) -> dict[str, Any]:
    """Zero the `fraction` smallest-magnitude weights of every Linear/Conv layer, in place;
    returns the achieved sparsity (the share of zero weights over those layers) and their names
    (LSTM, embedding and attention weights are left dense)."""
    zeros = total = 0
    layers = []
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, PRUNED_LAYERS):
                continue
            layers.append(name)
            weight = module.weight
            count = round(fraction * weight.numel())
            if count:
                threshold = weight.abs().flatten().kthvalue(count).values
                weight.masked_fill_(weight.abs() <= threshold, 0.0)
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return {"requested": fraction, "sparsity": zeros / total if total else 0.0, "layers": layers}
