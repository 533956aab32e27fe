"""The fitted tabular preprocessing, compiled for serving: checked rows in, the model's input out.

It computes exactly what `TabularPreprocessor.transform` computes (impute, standard-scale, one-hot
or ordinal codes) but with a few numpy operations per batch instead of a pandas frame per call,
which costs milliseconds a request. Rows must have passed `TabularCheck` first. A number whose
standardised value float32 cannot hold (1e200, or far less for a feature with a small spread) is
refused naming its row and feature: the model would answer it with infinities and NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from openmaas.datasets.preprocessing.tabular import OTHER, TabularPreprocessor
from openmaas.serving.signatures import InvalidRow, values_of

FLOAT32_MAX = float(np.finfo(np.float32).max)


class TabularEncoder:
    def __init__(self, preprocessor: TabularPreprocessor) -> None:
        self.width = preprocessor.width
        numeric_cols: list[int] = []
        self.numeric: list[str] = []
        fills, means, stds = [], [], []
        # (name, first column, category → code, fallback code, fill value)
        self.categorical: list[tuple[str, int, dict[str, int], int, str]] = []
        self.ordinal = preprocessor.encode == "ordinal"
        column = 0
        for feature in preprocessor.features:
            if feature.kind == "numeric":
                self.numeric.append(feature.name)
                numeric_cols.append(column)
                fills.append(float(feature.fill))
                means.append(feature.mean)
                stds.append(feature.std)
                column += 1
                continue
            lookup = {category: i for i, category in enumerate(feature.categories)}
            self.categorical.append((feature.name, column, lookup, lookup.get(OTHER, -1), str(feature.fill)))
            column += 1 if self.ordinal else len(feature.categories)
        self._numeric_cols = np.array(numeric_cols, dtype=np.intp)
        self._fill = np.array(fills, dtype=np.float64)
        self._mean = np.array(means, dtype=np.float64)
        self._std = np.array(stds, dtype=np.float64)
        self._values = values_of(self.numeric)

    def encode(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        out = np.zeros((len(rows), self.width), dtype=np.float64)
        if self.numeric:
            # None becomes NaN here, and NaN the fitted fill value.
            values = np.array(list(map(self._values, rows)), dtype=np.float64)
            values = np.where(np.isnan(values), self._fill, values)
            scaled = (values - self._mean) / self._std
            if not (np.abs(scaled) <= FLOAT32_MAX).all():
                raise self._unrepresentable(scaled, rows)
            out[:, self._numeric_cols] = scaled
        for name, column, lookup, fallback, fill in self.categorical:
            for index, row in enumerate(rows):
                value = row[name]
                code = lookup.get(fill if value is None else str(value), fallback)
                if self.ordinal:
                    out[index, column] = code
                elif code >= 0:
                    out[index, column + code] = 1.0
        return torch.from_numpy(out.astype(np.float32))

    def _unrepresentable(self, scaled: np.ndarray, rows: list[dict[str, Any]]) -> InvalidRow:
        index, column = (int(i) for i in np.argwhere(~(np.abs(scaled) <= FLOAT32_MAX))[0])
        name = self.numeric[column]
        mean, std = self._mean[column], self._std[column]
        low, high = mean - FLOAT32_MAX * std, mean + FLOAT32_MAX * std
        return InvalidRow(
            index,
            f"{rows[index][name]!r} is too far from this feature's training data for the model to "
            f"take; send a number from {low:.6g} to {high:.6g}.",
            name,
        )
