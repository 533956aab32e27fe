"""Image and audio classification: class-folder archives → decoded, resized (images) or
log-mel (audio) tensors → the small ResNet. Both share everything but the preprocessor."""

from __future__ import annotations

from pathlib import Path

from openmaas.datasets.loading import read_labelled_files
from openmaas.datasets.params import to_dict
from openmaas.datasets.preprocessing import (
    AudioPreprocessor,
    ImagePreprocessor,
    LabelEncoder,
    PreprocessingSpec,
    split_examples,
)
from openmaas.training.classification import SplitTensors, train_classifier
from openmaas.training.config import AudioClassificationConfig, ImageClassificationConfig, Task
from openmaas.training.context import TrainingContext
from openmaas.training.models import SmallResNet
from openmaas.training.result import TrainedModel
from openmaas.training.seeding import seed_everything


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
    train_files = [files.data[i] for i in split.train]
    prep: ImagePreprocessor | AudioPreprocessor
    if kind == "audio":
        prep = AudioPreprocessor.fit(train_files, spec.audio)
        in_channels, input_signature = (
            1,
            {"kind": "audio", "format": "wav", "sample_rate": spec.audio.sample_rate},
        )
    else:
        prep = ImagePreprocessor.fit(train_files, spec.image)
        in_channels = prep.channels
        input_signature = {
            "kind": "image",
            "height": spec.image.height,
            "width": spec.image.width,
            "channels": prep.channels,
        }
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
        "in_channels": in_channels,
        "num_classes": len(encoder.classes),
        "channels": list(config.channels),
        "blocks_per_stage": config.blocks_per_stage,
        "dropout": config.dropout,
    }
    seed_everything(config.seed)
    model = SmallResNet(**args)  # type: ignore[arg-type]
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
        labels=encoder.classes,
    )
