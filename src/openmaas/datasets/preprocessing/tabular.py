"""Tabular preprocessing: impute, standard-scale numbers, one-hot or ordinal encode categories.

Fitted on the training rows only; the same statistics transform rows at serving time, where a
missing or unknown feature is imputed rather than rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from openmaas.datasets.preprocessing.base import State
from openmaas.datasets.preprocessing.spec import TabularSpec
from openmaas.errors import ValidationFailed

NUMERIC_SHARE = 0.9
OTHER = "__other__"


@dataclass(frozen=True)
class FeatureState:
    name: str
    kind: str  # "numeric" | "categorical"
    fill: float | str
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()


def _as_numbers(column: pd.Series) -> pd.Series:
    return pd.to_numeric(column, errors="coerce").astype(np.float64)


def _is_numeric(column: pd.Series) -> bool:
    present = column.dropna()
    if present.empty:
        return True
    return bool(_as_numbers(present).notna().mean() >= NUMERIC_SHARE)


def _fit_feature(name: str, column: pd.Series, spec: TabularSpec) -> FeatureState:
    if _is_numeric(column):
        values = _as_numbers(column).dropna()
        fill = {"mean": values.mean(), "median": values.median(), "zero": 0.0}[spec.numeric_impute]
        fill = 0.0 if values.empty or pd.isna(fill) else float(fill)
        std = float(values.std(ddof=0)) if len(values) > 1 else 1.0
        scaled = spec.scale == "standard"
        return FeatureState(
            name,
            "numeric",
            fill,
            float(values.mean()) if scaled and len(values) else 0.0,
            std if scaled and std > 1e-12 else 1.0,
        )
    text = column.dropna().astype(str)
    counts = text.value_counts(sort=True)
    kept = sorted(counts.index[: spec.max_categories].tolist())
    if len(counts) > spec.max_categories:
        kept.append(OTHER)
    fill = (
        str(counts.index[0]) if spec.categorical_impute == "most_frequent" and len(counts) else "__missing__"
    )
    return FeatureState(name, "categorical", fill, categories=tuple(kept))


class TabularPreprocessor:
    kind = "tabular"

    def __init__(self, features: Sequence[FeatureState], encode: str) -> None:
        self.features = list(features)
        self.encode = encode

    @classmethod
    def fit(cls, frame: pd.DataFrame, spec: TabularSpec) -> TabularPreprocessor:
        names = [name for name in frame.columns if name not in spec.exclude]
        if not names:
            raise ValidationFailed("no feature columns are left to train on", param="features")
        return cls([_fit_feature(str(name), frame[name], spec) for name in names], spec.encode)

    @property
    def width(self) -> int:
        if self.encode == "ordinal":
            return len(self.features)
        return sum(1 if f.kind == "numeric" else len(f.categories) for f in self.features)

    def transform_frame(self, frame: pd.DataFrame) -> torch.Tensor:
        absent = pd.Series([np.nan] * len(frame), index=frame.index, dtype="object")
        blocks = [self._encode(f, frame.get(f.name, absent)) for f in self.features]
        return torch.from_numpy(np.concatenate(blocks, axis=1).astype(np.float32))

    def transform(self, raw: Sequence[Any]) -> torch.Tensor:
        """`raw` is a sequence of {feature name: value} rows; missing features are imputed."""
        if not raw or not all(isinstance(row, dict) for row in raw):
            raise ValidationFailed("inputs must be a non-empty list of feature objects", param="inputs")
        return self.transform_frame(pd.DataFrame(list(raw)))

    def _encode(self, feature: FeatureState, column: pd.Series) -> np.ndarray:
        if feature.kind == "numeric":
            filled = _as_numbers(column).fillna(float(feature.fill)).to_numpy()
            return ((filled - feature.mean) / feature.std).reshape(-1, 1)
        text = column.astype("object").where(column.notna(), feature.fill).astype(str)
        lookup = {category: i for i, category in enumerate(feature.categories)}
        fallback = lookup.get(OTHER, -1)
        codes = np.array([lookup.get(value, fallback) for value in text], dtype=np.int64)
        if self.encode == "ordinal":
            return codes.astype(np.float64).reshape(-1, 1)
        onehot = np.zeros((len(codes), len(feature.categories)))
        rows = np.flatnonzero(codes >= 0)
        onehot[rows, codes[rows]] = 1.0
        return onehot

    def state(self) -> State:
        return {"kind": self.kind, "encode": self.encode, "features": [asdict(f) for f in self.features]}, {}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, torch.Tensor]) -> TabularPreprocessor:
        features = [FeatureState(**{**f, "categories": tuple(f["categories"])}) for f in meta["features"]]
        return cls(features, meta["encode"])

    def signature(self) -> list[dict[str, Any]]:
        return [
            {"name": f.name, "type": f.kind, **({"categories": list(f.categories)} if f.categories else {})}
            for f in self.features
        ]
