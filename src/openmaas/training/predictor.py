"""A ready-to-predict model: raw inputs in (rows, texts, image or WAV bytes, user ids), typed
predictions out. Built from a TrainedModel or loaded from an artifact; knows nothing of files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from openmaas.datasets.preprocessing import InteractionIndex
from openmaas.datasets.preprocessing.base import FittedPreprocessor
from openmaas.errors import ValidationFailed
from openmaas.tasks import Task
from openmaas.training.models import MatrixFactorization

MAX_BATCH = 4096


@dataclass(frozen=True)
class ClassPrediction:
    label: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ValuePrediction:
    value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recommendations:
    user: str
    items: list[str]
    scores: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Prediction = ClassPrediction | ValuePrediction | Recommendations


class Predictor:
    def __init__(
        self,
        task: str,
        model: nn.Module,
        preprocessor: FittedPreprocessor,
        labels: Sequence[str] | None = None,
        default_k: int = 10,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.task = Task(task)
        self.model = model.eval()
        self.preprocessor = preprocessor
        self.labels = list(labels or [])
        self.default_k = default_k
        self.manifest = manifest or {}

    def predict(self, raw_inputs: Sequence[Any], *, k: int | None = None) -> list[Prediction]:
        """Predict a batch. `k` (recommendation only) overrides the number of items returned."""
        if not isinstance(raw_inputs, Sequence) or isinstance(raw_inputs, str | bytes) or not raw_inputs:
            raise ValidationFailed("inputs must be a non-empty list", param="inputs")
        if len(raw_inputs) > MAX_BATCH:
            raise ValidationFailed(f"at most {MAX_BATCH} inputs per call", param="inputs")
        if self.task == Task.RECOMMENDATION:
            return list(self._recommend(raw_inputs, k or self.default_k))
        with torch.no_grad():
            outputs = self.model(self.preprocessor.transform(raw_inputs))
        if self.task == Task.TABULAR_REGRESSION:
            return [ValuePrediction(float(value)) for value in outputs.squeeze(-1).tolist()]
        probabilities = torch.softmax(outputs, dim=1).tolist()
        return [self._class_prediction(row) for row in probabilities]

    def _class_prediction(self, row: list[float]) -> ClassPrediction:
        best = max(range(len(row)), key=row.__getitem__)
        return ClassPrediction(self.labels[best], dict(zip(self.labels, row, strict=True)))

    def _recommend(self, users: Sequence[Any], k: int) -> list[Recommendations]:
        index = self.preprocessor
        model = self.model
        assert isinstance(index, InteractionIndex) and isinstance(model, MatrixFactorization)
        if not 1 <= k <= len(index.items):
            raise ValidationFailed(f"k must be between 1 and {len(index.items)}", param="k")
        codes = index.transform(users)
        with torch.no_grad():
            scores = model.score_all(codes.clamp_min(0))
        # Users unseen in training get the most popular items.
        cold = codes < 0
        scores[cold] = index.popularity.float()
        results = []
        for row, (user, code) in enumerate(zip(users, codes.tolist(), strict=True)):
            if code >= 0:
                scores[row, index.seen_items(code)] = float("-inf")
            best = scores[row].topk(k)
            finite = torch.isfinite(best.values)
            items = [index.items[i] for i in best.indices[finite].tolist()]
            results.append(Recommendations(str(user), items, best.values[finite].tolist()))
        return results
