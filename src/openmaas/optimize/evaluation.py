"""The parent's test split, rebuilt: the dataset version it was trained on, split again with the
split spec and seed saved in its manifest, encoded by its own fitted preprocessing. A result is
scored on exactly the rows its parent was scored on; the training rows feed static calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from openmaas import errors
from openmaas.datasets.loading import read_table, require_columns
from openmaas.datasets.preprocessing import (
    LabelEncoder,
    PreprocessingSpec,
    TabularPreprocessor,
    split_examples,
)
from openmaas.training.classification import predict_batched
from openmaas.training.metrics import classification_metrics, regression_metrics

CALIBRATION_ROWS = 256


@dataclass(frozen=True)
class TestSet:
    task: str
    test_x: torch.Tensor
    test_y: np.ndarray
    calibration_x: torch.Tensor  # training rows, for static quantisation


def tabular_test_set(dataset: Path, manifest: dict[str, Any], preprocessor: Any) -> TestSet:
    """The test split of a tabular model's dataset, encoded as the model takes it."""
    if not isinstance(preprocessor, TabularPreprocessor):
        raise errors.ValidationFailed("the model has no tabular preprocessing", param="model")
    task = str(manifest["task"])
    target = str(manifest["training_params"]["target"])
    frame = read_table(dataset)
    require_columns(frame, target=target)
    frame = frame[frame[target].notna()].reset_index(drop=True)
    features, labels = frame.drop(columns=[target]), frame[target]
    spec = PreprocessingSpec.from_dict(manifest["preprocessing"]["spec"])
    if task == "tabular-classification":
        y = LabelEncoder(list(manifest["labels"])).encode(labels.tolist()).numpy()
        split = split_examples(len(y), spec.split, labels=y)
    else:
        y = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=np.float32)
        split = split_examples(len(y), spec.split)
    if not len(split.test):
        raise errors.ValidationFailed("the model's dataset has no test split to measure on", param="model")
    x = preprocessor.transform_frame(features)
    return TestSet(task, x[split.test], y[split.test], x[split.train[:CALIBRATION_ROWS]])


def evaluate(model: nn.Module, test: TestSet) -> dict[str, Any]:
    """The task's test metrics of `model` (any module taking the encoded tensor) on `test`."""
    outputs = predict_batched(model, test.test_x)
    if test.task == "tabular-regression":
        return regression_metrics(test.test_y, outputs.squeeze(-1).numpy())
    return classification_metrics(test.test_y, torch.softmax(outputs, dim=1).numpy())
