"""Recommendation preprocessing: user and item ids ↔ contiguous indices, plus what each user has
already seen (so serving can exclude it) and item popularity (for cold users and the baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from openmaas.datasets.preprocessing.base import State
from openmaas.errors import ValidationFailed


class InteractionIndex:
    kind = "interactions"

    def __init__(
        self,
        users: Sequence[str],
        items: Sequence[str],
        indptr: torch.Tensor,
        seen: torch.Tensor,
        popularity: torch.Tensor,
    ) -> None:
        self.users = list(users)
        self.items = list(items)
        self.user_index = {user: i for i, user in enumerate(self.users)}
        self.item_index = {item: i for i, item in enumerate(self.items)}
        self.indptr = indptr
        self.seen = seen
        self.popularity = popularity

    @classmethod
    def fit(cls, users: Sequence[Any], items: Sequence[Any]) -> InteractionIndex:
        """Index the ids found in the training interactions (one pair per position)."""
        user_ids = np.array([str(user) for user in users])
        item_ids = np.array([str(item) for item in items])
        user_list, user_codes = np.unique(user_ids, return_inverse=True)
        item_list, item_codes = np.unique(item_ids, return_inverse=True)
        pairs = np.unique(np.stack([user_codes, item_codes], axis=1), axis=0)
        counts = np.bincount(pairs[:, 0], minlength=len(user_list))
        indptr = np.concatenate([[0], np.cumsum(counts)])
        popularity = np.bincount(item_codes, minlength=len(item_list))
        return cls(
            user_list.tolist(),
            item_list.tolist(),
            torch.from_numpy(indptr.astype(np.int64)),
            torch.from_numpy(pairs[:, 1].astype(np.int64)),
            torch.from_numpy(popularity.astype(np.int64)),
        )

    def encode_users(self, users: Sequence[Any]) -> torch.Tensor:
        return torch.tensor([self.user_index.get(str(user), -1) for user in users], dtype=torch.long)

    def encode_items(self, items: Sequence[Any]) -> torch.Tensor:
        return torch.tensor([self.item_index.get(str(item), -1) for item in items], dtype=torch.long)

    def seen_items(self, user: int) -> torch.Tensor:
        return self.seen[self.indptr[user] : self.indptr[user + 1]]

    def transform(self, raw: Sequence[Any]) -> torch.Tensor:
        """User ids → user indices; -1 marks a user unseen in training (served by popularity)."""
        if not raw or not all(isinstance(user, str | int) for user in raw):
            raise ValidationFailed("inputs must be a non-empty list of user ids", param="inputs")
        return self.encode_users(raw)

    def state(self) -> State:
        meta = {"kind": self.kind, "users": self.users, "items": self.items}
        arrays = {
            "indptr": self.indptr.clone(),
            "seen": self.seen.clone(),
            "popularity": self.popularity.clone(),
        }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, torch.Tensor]) -> InteractionIndex:
        return cls(meta["users"], meta["items"], arrays["indptr"], arrays["seen"], arrays["popularity"])
