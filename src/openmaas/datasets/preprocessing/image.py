"""Image preprocessing: decode, convert to RGB or grayscale, resize, normalise with per-channel
mean and standard deviation measured on the training images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from openmaas.datasets.media import decode_image
from openmaas.datasets.preprocessing.base import State
from openmaas.datasets.preprocessing.spec import ImageSpec
from openmaas.errors import ValidationFailed


class ImagePreprocessor:
    kind = "image"

    def __init__(self, spec: ImageSpec, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.spec = spec
        self.mean = mean
        self.std = std

    @property
    def channels(self) -> int:
        return 1 if self.spec.grayscale else 3

    @classmethod
    def fit(cls, images: Sequence[bytes], spec: ImageSpec) -> ImagePreprocessor:
        channels = 1 if spec.grayscale else 3
        mean, std = torch.zeros(channels), torch.ones(channels)
        fitted = cls(spec, mean, std)
        if spec.normalize:
            batch = fitted.decode(images)
            fitted.mean = batch.mean(dim=(0, 2, 3))
            fitted.std = batch.std(dim=(0, 2, 3)).clamp_min(1e-6)
        return fitted

    def decode(self, images: Sequence[bytes]) -> torch.Tensor:
        size = (self.spec.height, self.spec.width)
        arrays = [decode_image(data, size, self.spec.grayscale) for data in images]
        return torch.from_numpy(np.stack(arrays))

    def transform(self, raw: Sequence[Any]) -> torch.Tensor:
        if not raw or not all(isinstance(data, bytes | bytearray) for data in raw):
            raise ValidationFailed("inputs must be a non-empty list of encoded images", param="inputs")
        batch = self.decode([bytes(data) for data in raw])
        return (batch - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def state(self) -> State:
        meta = {
            "kind": self.kind,
            "height": self.spec.height,
            "width": self.spec.width,
            "grayscale": self.spec.grayscale,
            "normalize": self.spec.normalize,
        }
        return meta, {"mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, torch.Tensor]) -> ImagePreprocessor:
        spec = ImageSpec(
            height=meta["height"],
            width=meta["width"],
            grayscale=meta["grayscale"],
            normalize=meta["normalize"],
        )
        return cls(spec, arrays["mean"], arrays["std"])
