"""What every fitted preprocessor offers: `transform` raw inputs into tensors, and `state`,
which is plain JSON plus named arrays (stored as safetensors, never pickled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

State = tuple[dict[str, Any], dict[str, torch.Tensor]]


class FittedPreprocessor(Protocol):
    kind: str

    def transform(self, raw: Sequence[Any]) -> torch.Tensor:
        """Turn raw serving inputs (rows, texts, image or WAV bytes, user ids) into a batch tensor."""
        ...

    def state(self) -> State:
        """JSON-ready metadata (including `kind`) and named arrays that rebuild this object."""
        ...


class LabelEncoder:
    """Class labels (as strings, sorted) to contiguous integer ids and back."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self._index = {label: i for i, label in enumerate(self.classes)}

    @classmethod
    def fit(cls, labels: Sequence[Any]) -> LabelEncoder:
        return cls(sorted({str(label) for label in labels}))

    def encode(self, labels: Sequence[Any]) -> torch.Tensor:
        return torch.tensor([self._index[str(label)] for label in labels], dtype=torch.long)
