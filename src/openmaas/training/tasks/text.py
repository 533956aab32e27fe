"""Text classification: a tokenizer trained on the training texts, then an LSTM or a small
transformer encoder, as the config's `architecture` says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from openmaas.datasets.loading import read_table, require_columns
from openmaas.datasets.params import to_dict
from openmaas.datasets.preprocessing import LabelEncoder, PreprocessingSpec, TextPreprocessor, split_examples
from openmaas.errors import ValidationFailed
from openmaas.tasks import Task
from openmaas.training.classification import SplitTensors, train_classifier
from openmaas.training.config import TextClassificationConfig
from openmaas.training.context import TrainingContext
from openmaas.training.models import LSTMClassifier, TransformerClassifier
from openmaas.training.result import TrainedModel
from openmaas.training.seeding import seed_everything


def _build(
    config: TextClassificationConfig, prep: TextPreprocessor, classes: int
) -> tuple[nn.Module, dict[str, Any]]:
    common: dict[str, Any] = {
        "vocab_size": prep.vocab_size,
        "num_classes": classes,
        "embedding_dim": config.embedding_dim,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "dropout": config.dropout,
        "pad_id": prep.pad_id,
    }
    seed_everything(config.seed)
    if config.architecture == "transformer":
        args = {**common, "max_length": prep.max_length, "num_heads": config.num_heads}
        return TransformerClassifier(**args), {"name": "transformer", "args": args}
    return LSTMClassifier(**common), {"name": "lstm", "args": common}


def train_text_classification(
    path: Path, config: TextClassificationConfig, spec: PreprocessingSpec, context: TrainingContext
) -> TrainedModel:
    frame = read_table(path)
    require_columns(frame, text_column=config.text_column, target=config.target)
    frame = frame[frame[config.target].notna()].reset_index(drop=True)
    texts = frame[config.text_column].fillna("").astype(str).tolist()
    encoder = LabelEncoder.fit(frame[config.target].tolist())
    if len(encoder.classes) < 2:
        raise ValidationFailed(f"the label column {config.target!r} has only one class", param="target")
    codes = encoder.encode(frame[config.target].tolist())
    split = split_examples(len(codes), spec.split, labels=codes.numpy())
    prep = TextPreprocessor.fit([texts[i] for i in split.train], spec.text)
    x = prep.transform(texts)
    data = SplitTensors(
        x[split.train],
        codes[split.train],
        x[split.validation],
        codes[split.validation],
        x[split.test],
        codes[split.test],
    )
    model, architecture = _build(config, prep, len(encoder.classes))
    result, metrics = train_classifier(model, data, config, context)
    return TrainedModel(
        task=Task.TEXT_CLASSIFICATION.value,
        architecture=architecture,
        model=model,
        preprocessor=prep,
        params=to_dict(config),
        preprocessing_spec=spec.to_dict(),
        input_signature={"kind": "text", "max_length": prep.max_length},
        output_signature={"kind": "class_probabilities", "labels": encoder.classes},
        metrics=metrics,
        history=result.history,
        resumed_from_epoch=result.resumed_from_epoch,
        labels=encoder.classes,
    )
