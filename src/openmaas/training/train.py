"""The one entry point of training: validate the task's hyperparameters and preprocessing spec,
then run the task family's trainer. The job system calls `train` with its own TrainingContext."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openmaas.datasets.preprocessing import PreprocessingSpec
from openmaas.training.config import (
    AudioClassificationConfig,
    ImageClassificationConfig,
    RecommendationConfig,
    TabularClassificationConfig,
    TabularRegressionConfig,
    Task,
    TextClassificationConfig,
    config_from_params,
    parse_task,
)
from openmaas.training.context import InMemoryContext, TrainingContext
from openmaas.training.result import TrainedModel
from openmaas.training.tasks.media import train_media_classification
from openmaas.training.tasks.recommendation import train_recommendation
from openmaas.training.tasks.tabular import train_tabular_classification, train_tabular_regression
from openmaas.training.tasks.text import train_text_classification


def train(
    task: str,
    dataset: Path | str,
    params: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    context: TrainingContext | None = None,
) -> TrainedModel:
    """Train a model of `task` on the dataset file at `dataset`.

    Raises ValidationFailed (naming the parameter) for bad hyperparameters or preprocessing, and
    TrainingStopped when `context.should_stop()` turns true; a later call with the same context
    resumes from its latest checkpoint.
    """
    kind = parse_task(task)
    config = config_from_params(kind, params)
    spec = PreprocessingSpec.from_dict(preprocessing)
    context = context if context is not None else InMemoryContext()
    path = Path(dataset)
    if kind == Task.TABULAR_CLASSIFICATION:
        assert isinstance(config, TabularClassificationConfig)
        return train_tabular_classification(path, config, spec, context)
    if kind == Task.TABULAR_REGRESSION:
        assert isinstance(config, TabularRegressionConfig)
        return train_tabular_regression(path, config, spec, context)
    if kind == Task.TEXT_CLASSIFICATION:
        assert isinstance(config, TextClassificationConfig)
        return train_text_classification(path, config, spec, context)
    if kind == Task.RECOMMENDATION:
        assert isinstance(config, RecommendationConfig)
        return train_recommendation(path, config, spec, context)
    assert isinstance(config, ImageClassificationConfig | AudioClassificationConfig)
    return train_media_classification(path, kind, config, spec, context)
