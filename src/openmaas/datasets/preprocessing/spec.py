"""The declarative preprocessing spec: what to do to the data, as plain JSON-ready dataclasses.

A spec says *what* (impute with the median, one-hot encode, a WordPiece tokenizer of 4000
tokens, 40 mel bins); fitting it on the training split gives a fitted preprocessor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from openmaas.datasets.params import parse_dataclass, require, to_dict


@dataclass(frozen=True)
class SplitSpec:
    """Fractions held out for validation and test; the rest trains. Seeded and stratified."""

    validation: float = 0.1
    test: float = 0.2
    seed: int = 0
    stratify: bool = True

    def __post_init__(self) -> None:
        require(0.0 <= self.validation < 1.0, "validation", "must be in [0, 1)")
        require(0.0 < self.test < 1.0, "test", "must be in (0, 1)")
        require(self.validation + self.test < 0.9, "test", "plus validation must leave at least 10% to train")


@dataclass(frozen=True)
class TabularSpec:
    numeric_impute: Literal["mean", "median", "zero"] = "mean"
    categorical_impute: Literal["most_frequent", "constant"] = "most_frequent"
    scale: Literal["standard", "none"] = "standard"
    encode: Literal["onehot", "ordinal"] = "onehot"
    max_categories: int = 50
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        require(self.max_categories >= 1, "max_categories", "must be at least 1")


@dataclass(frozen=True)
class TextSpec:
    tokenizer: Literal["bpe", "wordpiece"] = "wordpiece"
    vocab_size: int = 4000
    max_length: int = 64
    lowercase: bool = True
    min_frequency: int = 1

    def __post_init__(self) -> None:
        require(50 <= self.vocab_size <= 200_000, "vocab_size", "must be between 50 and 200000")
        require(2 <= self.max_length <= 4096, "max_length", "must be between 2 and 4096")
        require(self.min_frequency >= 1, "min_frequency", "must be at least 1")


@dataclass(frozen=True)
class ImageSpec:
    height: int = 32
    width: int = 32
    grayscale: bool = False
    normalize: bool = True

    def __post_init__(self) -> None:
        require(4 <= self.height <= 1024, "height", "must be between 4 and 1024")
        require(4 <= self.width <= 1024, "width", "must be between 4 and 1024")


@dataclass(frozen=True)
class AudioSpec:
    sample_rate: int = 8000
    duration_s: float = 1.0
    n_fft: int = 256
    hop_length: int = 80
    n_mels: int = 40
    f_min: float = 0.0
    f_max: float | None = None

    def __post_init__(self) -> None:
        require(1000 <= self.sample_rate <= 96_000, "sample_rate", "must be between 1000 and 96000")
        require(0.05 <= self.duration_s <= 60, "duration_s", "must be between 0.05 and 60 seconds")
        require(16 <= self.n_fft <= 8192, "n_fft", "must be between 16 and 8192")
        require(1 <= self.hop_length <= self.n_fft, "hop_length", "must be between 1 and n_fft")
        require(4 <= self.n_mels <= self.n_fft // 2 + 1, "n_mels", "must be between 4 and n_fft/2+1")
        nyquist = self.sample_rate / 2
        require(0 <= self.f_min < (self.f_max or nyquist), "f_min", "must be below f_max")
        require(self.f_max is None or self.f_max <= nyquist, "f_max", "must be at most sample_rate/2")


@dataclass(frozen=True)
class PreprocessingSpec:
    """The whole spec; only the section matching the task's input is used."""

    split: SplitSpec = field(default_factory=SplitSpec)
    tabular: TabularSpec = field(default_factory=TabularSpec)
    text: TextSpec = field(default_factory=TextSpec)
    image: ImageSpec = field(default_factory=ImageSpec)
    audio: AudioSpec = field(default_factory=AudioSpec)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PreprocessingSpec:
        return parse_dataclass(cls, data, prefix="preprocessing.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
