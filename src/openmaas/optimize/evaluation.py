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
from openmaas.datasets.loading import read_labelled_files, read_table, require_columns
from openmaas.datasets.preprocessing import (
    LabelEncoder,
    PreprocessingSpec,
    TabularPreprocessor,
    split_examples,
)
from openmaas.tasks import Task
from openmaas.training.classification import predict_batched
from openmaas.training.config import (
    TabularClassificationConfig,
    TextClassificationConfig,
    config_from_params,
    parse_task,
)
from openmaas.training.metrics import classification_metrics, regression_metrics

CALIBRATION_ROWS = 256
TABULAR = frozenset({Task.TABULAR_CLASSIFICATION, Task.TABULAR_REGRESSION})


@dataclass(frozen=True)
class TestSet:
    task: Task
    test_x: torch.Tensor
    test_y: np.ndarray
    calibration_x: torch.Tensor  # training rows, for static quantisation


def test_set(dataset: Path, manifest: dict[str, Any], preprocessor: Any) -> TestSet:
    """The test split (and calibration rows) of a model's dataset, encoded as the model takes it."""
    task = parse_task(str(manifest["task"]))
    spec = PreprocessingSpec.from_dict(manifest["preprocessing"]["spec"])
    config = config_from_params(task, manifest["training_params"])
    if task in TABULAR:
        if not isinstance(preprocessor, TabularPreprocessor):
            raise errors.ValidationFailed("the model has no tabular preprocessing", param="model")
        assert isinstance(config, TabularClassificationConfig)  # the regression config derives from it
        frame = _labelled(read_table(dataset), config.target)
        features, labels = frame.drop(columns=[config.target]), frame[config.target]
        if task == Task.TABULAR_REGRESSION:
            y = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=np.float32)
            split = split_examples(len(y), spec.split)
        else:
            y = LabelEncoder(list(manifest["labels"])).encode(labels.tolist()).numpy()
            split = split_examples(len(y), spec.split, labels=y)
        x = preprocessor.transform_frame(features)
        return _test_set(task, x[split.test], y[split.test], x[split.train[:CALIBRATION_ROWS]])
    if task == Task.TEXT_CLASSIFICATION:
        assert isinstance(config, TextClassificationConfig)
        frame = read_table(dataset)
        require_columns(frame, text_column=config.text_column, target=config.target)
        frame = frame[frame[config.target].notna()].reset_index(drop=True)
        inputs: list[Any] = frame[config.text_column].fillna("").astype(str).tolist()
        label_list = frame[config.target].tolist()
    else:
        files = read_labelled_files(dataset, "audio" if task == Task.AUDIO_CLASSIFICATION else "image")
        inputs, label_list = list(files.data), list(files.labels)
    y = LabelEncoder(list(manifest["labels"])).encode(label_list).numpy()
    split = split_examples(len(y), spec.split, labels=y)
    test_x = preprocessor.transform([inputs[i] for i in split.test]) if len(split.test) else torch.empty(0)
    calibration = preprocessor.transform([inputs[i] for i in split.train[:CALIBRATION_ROWS]])
    return _test_set(task, test_x, y[split.test], calibration)


def _labelled(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    require_columns(frame, target=target)
    return frame[frame[target].notna()].reset_index(drop=True)


def _test_set(task: Task, test_x: torch.Tensor, test_y: np.ndarray, calibration: torch.Tensor) -> TestSet:
    if not len(test_y):
        raise errors.ValidationFailed("the model's dataset has no test split to measure on", param="model")
    return TestSet(task, test_x, test_y, calibration)


def evaluate(model: nn.Module, test: TestSet) -> dict[str, Any]:
    """The task's test metrics of `model` (any module taking the encoded tensor) on `test`."""
    outputs = predict_batched(model, test.test_x)
    if test.task == Task.TABULAR_REGRESSION:
        return regression_metrics(test.test_y, outputs.squeeze(-1).numpy())
    return classification_metrics(test.test_y, torch.softmax(outputs, dim=1).numpy())
