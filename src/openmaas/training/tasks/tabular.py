"""Tabular classification and regression: an MLP on imputed, scaled and encoded columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from openmaas.datasets.loading import read_table, require_columns
from openmaas.datasets.params import to_dict
from openmaas.datasets.preprocessing import (
    LabelEncoder,
    PreprocessingSpec,
    TabularPreprocessor,
    split_examples,
)
from openmaas.errors import ValidationFailed
from openmaas.tasks import Task
from openmaas.training.classification import SplitTensors, loop_settings, predict_batched, train_classifier
from openmaas.training.config import TabularClassificationConfig, TabularRegressionConfig
from openmaas.training.context import TrainingContext
from openmaas.training.loop import train_loop
from openmaas.training.metrics import regression_metrics
from openmaas.training.models import MLP
from openmaas.training.result import TrainedModel
from openmaas.training.seeding import seed_everything


def _load(path: Path, target: str) -> tuple[pd.DataFrame, pd.Series]:
    frame = read_table(path)
    require_columns(frame, target=target)
    frame = frame[frame[target].notna()].reset_index(drop=True)
    if len(frame) < 10:
        raise ValidationFailed("the dataset needs at least 10 labelled rows", param="dataset")
    return frame.drop(columns=[target]), frame[target]


def _mlp(config: TabularClassificationConfig, width: int, outputs: int) -> tuple[MLP, dict[str, object]]:
    args = {
        "in_features": width,
        "out_features": outputs,
        "hidden_sizes": list(config.hidden_sizes),
        "dropout": config.dropout,
    }
    seed_everything(config.seed)
    return MLP(**args), {"name": "mlp", "args": args}  # type: ignore[arg-type]


def train_tabular_classification(
    path: Path, config: TabularClassificationConfig, spec: PreprocessingSpec, context: TrainingContext
) -> TrainedModel:
    features, target = _load(path, config.target)
    encoder = LabelEncoder.fit(target.tolist())
    if len(encoder.classes) < 2:
        raise ValidationFailed(f"the label column {config.target!r} has only one class", param="target")
    codes = encoder.encode(target.tolist())
    split = split_examples(len(codes), spec.split, labels=codes.numpy())
    prep = TabularPreprocessor.fit(features.iloc[split.train], spec.tabular)
    x = prep.transform_frame(features)
    data = SplitTensors(
        x[split.train],
        codes[split.train],
        x[split.validation],
        codes[split.validation],
        x[split.test],
        codes[split.test],
    )
    model, architecture = _mlp(config, prep.width, len(encoder.classes))
    result, metrics = train_classifier(model, data, config, context)
    return TrainedModel(
        task=Task.TABULAR_CLASSIFICATION.value,
        architecture=architecture,
        model=model,
        preprocessor=prep,
        params=to_dict(config),
        preprocessing_spec=spec.to_dict(),
        input_signature={"kind": "tabular", "features": prep.signature()},
        output_signature={"kind": "class_probabilities", "labels": encoder.classes},
        metrics=metrics,
        history=result.history,
        resumed_from_epoch=result.resumed_from_epoch,
        labels=encoder.classes,
    )


def _regression_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """MSE on normalised targets. The output goes through `model(...)` itself, which may be a
    data-parallel wrapper (DDP syncs gradients only for a forward called through it), and is
    normalised here with the MLP's own shift and scale."""
    inputs, targets = batch
    mlp = getattr(model, "module", model)  # DDP keeps the wrapped model as `.module`
    assert isinstance(mlp, MLP)
    shift, scale = mlp.output_shift, mlp.output_scale
    predicted = (model(inputs).squeeze(-1) - shift) / scale
    return F.mse_loss(predicted, (targets - shift) / scale)


def train_tabular_regression(
    path: Path, config: TabularRegressionConfig, spec: PreprocessingSpec, context: TrainingContext
) -> TrainedModel:
    features, raw_target = _load(path, config.target)
    numeric = pd.to_numeric(raw_target, errors="coerce")
    if numeric.isna().any():
        raise ValidationFailed(f"the target column {config.target!r} must be numeric", param="target")
    y = torch.tensor(numeric.to_numpy(dtype=np.float32))
    split = split_examples(len(y), spec.split)
    prep = TabularPreprocessor.fit(features.iloc[split.train], spec.tabular)
    x = prep.transform_frame(features)
    model, architecture = _mlp(config, prep.width, 1)
    train_y = y[split.train]
    model.output_shift.fill_(float(train_y.mean()))
    model.output_scale.fill_(float(train_y.std().clamp_min(1e-6)))
    val = split.validation if len(split.validation) else split.train

    def evaluate(trained: nn.Module) -> dict[str, float]:
        predicted = predict_batched(trained, x[val]).squeeze(-1).numpy()
        return {k: float(v) for k, v in regression_metrics(y[val].numpy(), predicted).items()}  # type: ignore[arg-type]

    result = train_loop(
        model,
        (x[split.train], train_y),
        _regression_loss,
        evaluate,
        loop_settings(config, "mse", mode="min"),
        context,
    )
    predicted = predict_batched(model, x[split.test]).squeeze(-1).numpy()
    return TrainedModel(
        task=Task.TABULAR_REGRESSION.value,
        architecture=architecture,
        model=model,
        preprocessor=prep,
        params=to_dict(config),
        preprocessing_spec=spec.to_dict(),
        input_signature={"kind": "tabular", "features": prep.signature()},
        output_signature={"kind": "value", "target": config.target},
        metrics=regression_metrics(y[split.test].numpy(), predicted),
        history=result.history,
        resumed_from_epoch=result.resumed_from_epoch,
    )
