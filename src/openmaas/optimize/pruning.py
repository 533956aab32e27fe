"""Magnitude pruning: the smallest `fraction` of each Linear/Conv layer's weights set to zero.

Honest about what it buys: unstructured zeros leave a dense tensor of the same shape, so the
safetensors file is the same size and dense kernels are no faster; only compression (and sparse
kernels, which this platform does not use) benefit. The job measures and reports all of that.
"""

from __future__ import annotations

import torch
from torch import nn

PRUNED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
NOTE = (
    "Unstructured magnitude pruning zeroes weights inside dense tensors: the weights file keeps "
    "its size and dense CPU kernels do the same work, so expect no speed-up; the zeros only help "
    "compression (see compressed_bytes) and sparse kernels, which this platform does not use."
)


def prune(model: nn.Module, fraction: float) -> dict[str, float]:
    """Zero the `fraction` smallest-magnitude weights of every prunable layer, in place;
    returns the achieved sparsity (the share of zero weights over the pruned layers)."""
    zeros = total = 0
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, PRUNED_LAYERS):
                continue
            weight = module.weight
            count = round(fraction * weight.numel())
            if count:
                threshold = weight.abs().flatten().kthvalue(count).values
                weight.masked_fill_(weight.abs() <= threshold, 0.0)
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return {"requested": fraction, "sparsity": zeros / total if total else 0.0}
