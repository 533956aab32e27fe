"""Matrix factorisation for recommendation: user and item embeddings with biases. Trained on
explicit ratings (squared error) or implicit interactions (BPR with sampled negatives).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MatrixFactorization(nn.Module):
    def __init__(self, num_users: int, num_items: int, factors: int = 32) -> None:
        super().__init__()
        self.user = nn.Embedding(num_users, factors)
        self.item = nn.Embedding(num_items, factors)
        self.user_bias = nn.Embedding(num_users, 1)
        self.item_bias = nn.Embedding(num_items, 1)
        self.global_bias = nn.Parameter(torch.zeros(1))
        for table in (self.user, self.item):
            nn.init.normal_(table.weight, std=0.1)
        for bias in (self.user_bias, self.item_bias):
            nn.init.zeros_(bias.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of (user, item) pairs."""
        dot = (self.user(users) * self.item(items)).sum(-1)
        return dot + self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1) + self.global_bias

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(batch, num_items) scores of every item for each user."""
        scores = self.user(users) @ self.item.weight.T + self.item_bias.weight.T
        return scores + self.user_bias(users) + self.global_bias


def bpr_loss(
    model: MatrixFactorization, users: torch.Tensor, positives: torch.Tensor, negatives: int
) -> torch.Tensor:
    """Bayesian personalised ranking: a seen item should outscore random unseen-by-sampling ones."""
    num_items = model.item.num_embeddings
    sampled = torch.randint(0, num_items, (len(users), negatives))
    pos = model(users, positives).unsqueeze(1)
    neg = model(users.unsqueeze(1).expand_as(sampled), sampled)
    return -F.logsigmoid(pos - neg).mean()
