"""Image and audio classification: class-folder archives → decoded, resized (images) or
log-mel (audio) tensors → the small ResNet. Both share everything but the preprocessor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openmaas.datasets.loading import read_labelled_files
from openmaas.datasets.params import to_dict
from openmaas.datasets.preprocessing import (
    AudioPreprocessor,
    ImagePreprocessor,
    LabelEncoder,
    PreprocessingSpec,
    split_examples,
)
from openmaas.tasks import Task
from openmaas.training.classification import SplitTensors, train_classifier
from openmaas.training.config import AudioClassificationConfig, ImageClassificationConfig
from openmaas.training.context import TrainingContext
from openmaas.training.models import SmallResNet
from openmaas.training.result import TrainedModel
from openmaas.training.seeding import seed_everything

MediaPreprocessor = ImagePreprocessor | AudioPreprocessor


def _fit(kind: str, files: list[bytes], spec: PreprocessingSpec) -> tuple[MediaPreprocessor, dict[str, Any]]:
    """Fit the preprocessor on the training files; return it with the input signature."""
    if kind == "audio":
        audio = AudioPreprocessor.fit(files, spec.audio)
        return audio, {"kind": "audio", "format": "wav", "sample_rate": spec.audio.sample_rate, "channels": 1}
    image = ImagePreprocessor.fit(files, spec.image)
    size = {"height": spec.image.height, "width": spec.image.width, "channels": image.channels}
    return image, {"kind": "image", **size}


def train_media_classification(
    path: Path,
    task: Task,
    config: ImageClassificationConfig | AudioClassificationConfig,
    spec: PreprocessingSpec,
    context: TrainingContext,
) -> TrainedModel:
    kind = "audio" if task == Task.AUDIO_CLASSIFICATION else "image"
    files = read_labelled_files(path, kind)
    encoder = LabelEncoder.fit(files.labels)
    codes = encoder.encode(files.labels)
    split = split_examples(len(codes), spec.split, labels=codes.numpy())
    prep, input_signature = _fit(kind, [files.data[i] for i in split.train], spec)
    x = prep.transform(files.data)
    data = SplitTensors(
        x[split.train],
        codes[split.train],
        x[split.validation],
        codes[split.validation],
        x[split.test],
        codes[split.test],
    )
    args = {
        "in_channels": input_signature["channels"],
        "num_classes": len(encoder.classes),
        "channels": list(config.channels),
        "blocks_per_stage": config.blocks_per_stage,
        "dropout": config.dropout,
    }
    seed_everything(config.seed)
    model = SmallResNet(**args)
    result, metrics = train_classifier(model, data, config, context)
    return TrainedModel(
        task=task.value,
        architecture={"name": "small_resnet", "args": args},
        model=model,
        preprocessor=prep,
        params=to_dict(config),
        preprocessing_spec=spec.to_dict(),
        input_signature=input_signature,
        output_signature={"kind": "class_probabilities", "labels": encoder.classes},
        metrics=metrics,
        history=result.history,
        resumed_from_epoch=result.resumed_from_epoch,
        labels=encoder.classes,
    )
