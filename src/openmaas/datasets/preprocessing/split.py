"""Seeded train/validation/test splits: stratified by class for examples, per user for
interactions (so every user keeps history to learn from and items to be tested on).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openmaas.datasets.preprocessing.spec import SplitSpec


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def _cut(indices: np.ndarray, spec: SplitSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(indices)
    n_test = round(n * spec.test)
    n_val = round(n * spec.validation)
    if n >= 3:
        n_test = max(n_test, 1)
        n_val = max(n_val, 1) if spec.validation > 0 else 0
    return indices[n_test + n_val :], indices[n_test : n_test + n_val], indices[:n_test]


def split_examples(n: int, spec: SplitSpec, labels: np.ndarray | None = None) -> Split:
    """Split `n` example indices; with `labels` and `spec.stratify`, keep class proportions."""
    rng = np.random.default_rng(spec.seed)
    if labels is None or not spec.stratify:
        parts = _cut(rng.permutation(n), spec)
    else:
        pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            pieces.append(_cut(members[rng.permutation(len(members))], spec))
        parts = tuple(np.concatenate([piece[i] for piece in pieces]) for i in range(3))  # type: ignore[assignment]
    train, validation, test = (np.sort(part).astype(np.int64) for part in parts)
    return Split(train=train, validation=validation, test=test)


def split_interactions(users: np.ndarray, spec: SplitSpec) -> Split:
    """Hold out a fraction of each user's interactions (users with fewer than 3 stay in train)."""
    rng = np.random.default_rng(spec.seed)
    order = np.argsort(users, kind="stable")
    boundaries = np.flatnonzero(np.diff(users[order])) + 1
    train: list[np.ndarray] = []
    validation: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for group in np.split(order, boundaries):
        if len(group) < 3:
            train.append(group)
            continue
        tr, va, te = _cut(group[rng.permutation(len(group))], spec)
        train.append(tr)
        validation.append(va)
        test.append(te)

    def join(parts: list[np.ndarray]) -> np.ndarray:
        return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    return Split(train=join(train), validation=join(validation), test=join(test))
