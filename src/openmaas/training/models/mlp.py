"""A multilayer perceptron for tabular data. For regression it predicts in the target's own
units: the scale and shift learned from the training targets are buffers saved with the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    output_scale: torch.Tensor
    output_shift: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_sizes: Sequence[int] = (64, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)
        self.register_buffer("output_scale", torch.ones(out_features))
        self.register_buffer("output_shift", torch.zeros(out_features))

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Output before un-scaling: what regression losses compare with normalised targets."""
        out: torch.Tensor = self.net(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_normalized(x) * self.output_scale + self.output_shift
