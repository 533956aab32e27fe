"""One config dataclass per task family: its hyperparameters, their defaults and their checks.

`config_from_params(task, params)` is what the API and CLI call; every bad value raises
ValidationFailed whose `param` names the hyperparameter (an unknown one: `params.<name>`, with the
task's parameters and the closest name in the message). `hyperparameters(task)` lists them.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from openmaas.datasets.params import parse_dataclass, require, unknown_parameter
from openmaas.errors import ValidationFailed
from openmaas.tasks import Task


@dataclass(frozen=True)
class CommonConfig:
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    patience: int = 0
    checkpoint_every: int = 1
    checkpoint_min_seconds: float = 0.0
    checkpoint_overhead: float = 0.02

    def __post_init__(self) -> None:
        require(1 <= self.epochs <= 10_000, "epochs", "must be between 1 and 10000")
        require(1 <= self.batch_size <= 65_536, "batch_size", "must be between 1 and 65536")
        require(0 < self.learning_rate <= 10, "learning_rate", "must be in (0, 10]")
        require(0 <= self.weight_decay <= 1, "weight_decay", "must be in [0, 1]")
        require(self.seed >= 0, "seed", "must be non-negative")
        require(self.patience >= 0, "patience", "must be non-negative (0 disables early stopping)")
        require(self.checkpoint_every >= 1, "checkpoint_every", "must be at least 1")
        require(0 <= self.checkpoint_min_seconds <= 86_400, "checkpoint_min_seconds", "must be in [0, 86400]")
        require(0 <= self.checkpoint_overhead <= 1, "checkpoint_overhead", "must be in [0, 1]")


def _check_dropout(dropout: float) -> None:
    require(0 <= dropout < 1, "dropout", "must be in [0, 1)")


def _check_sizes(sizes: tuple[int, ...], param: str, allow_empty: bool = False) -> None:
    require(allow_empty or len(sizes) > 0, param, "must not be empty")
    require(all(1 <= size <= 4096 for size in sizes), param, "must hold sizes between 1 and 4096")


@dataclass(frozen=True)
class TabularClassificationConfig(CommonConfig):
    target: str = "label"
    hidden_sizes: tuple[int, ...] = (64, 32)
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_sizes(self.hidden_sizes, "hidden_sizes", allow_empty=True)
        _check_dropout(self.dropout)


@dataclass(frozen=True)
class TabularRegressionConfig(TabularClassificationConfig):
    target: str = "target"


@dataclass(frozen=True)
class ImageClassificationConfig(CommonConfig):
    channels: tuple[int, ...] = (16, 32)
    blocks_per_stage: int = 1
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_sizes(self.channels, "channels")
        require(1 <= self.blocks_per_stage <= 8, "blocks_per_stage", "must be between 1 and 8")
        _check_dropout(self.dropout)


@dataclass(frozen=True)
class AudioClassificationConfig(ImageClassificationConfig):
    pass


@dataclass(frozen=True)
class TextClassificationConfig(CommonConfig):
    text_column: str = "text"
    target: str = "label"
    architecture: Literal["lstm", "transformer"] = "lstm"
    embedding_dim: int = 64
    hidden_size: int = 64
    num_layers: int = 1
    num_heads: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        require(4 <= self.embedding_dim <= 2048, "embedding_dim", "must be between 4 and 2048")
        require(4 <= self.hidden_size <= 4096, "hidden_size", "must be between 4 and 4096")
        require(1 <= self.num_layers <= 12, "num_layers", "must be between 1 and 12")
        require(1 <= self.num_heads <= 32, "num_heads", "must be between 1 and 32")
        if self.architecture == "transformer":
            require(self.embedding_dim % self.num_heads == 0, "num_heads", "must divide embedding_dim")
        _check_dropout(self.dropout)


@dataclass(frozen=True)
class RecommendationConfig(CommonConfig):
    user_column: str = "user"
    item_column: str = "item"
    rating_column: str | None = None
    feedback: Literal["implicit", "explicit"] = "implicit"
    factors: int = 32
    negatives: int = 4
    k: int = 10
    batch_size: int = 256
    learning_rate: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        require(1 <= self.factors <= 1024, "factors", "must be between 1 and 1024")
        require(1 <= self.negatives <= 100, "negatives", "must be between 1 and 100")
        require(1 <= self.k <= 1000, "k", "must be between 1 and 1000")
        if self.feedback == "explicit":
            require(self.rating_column is not None, "rating_column", "is required for explicit feedback")


CONFIGS: dict[Task, type[CommonConfig]] = {
    Task.TABULAR_CLASSIFICATION: TabularClassificationConfig,
    Task.TABULAR_REGRESSION: TabularRegressionConfig,
    Task.IMAGE_CLASSIFICATION: ImageClassificationConfig,
    Task.TEXT_CLASSIFICATION: TextClassificationConfig,
    Task.AUDIO_CLASSIFICATION: AudioClassificationConfig,
    Task.RECOMMENDATION: RecommendationConfig,
}


def parse_task(task: str) -> Task:
    try:
        return Task(task)
    except ValueError:
        raise ValidationFailed(
            f"unknown task {task!r}; expected one of {[t.value for t in Task]}", param="task"
        ) from None


def hyperparameters(task: str) -> list[dict[str, Any]]:
    """Each hyperparameter of `task` with its type and default (for API docs and CLI help)."""
    cls = CONFIGS[parse_task(task)]
    hints = typing.get_type_hints(cls)
    return [
        {"name": f.name, "type": _type_name(hints[f.name]), "default": _default(f.default)}
        for f in dataclasses.fields(cls)
    ]


def _type_name(kind: Any) -> str:
    return str(kind).replace("typing.", "") if typing.get_origin(kind) else kind.__name__


def _default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def config_from_params(task: Task | str, params: Mapping[str, Any] | None = None) -> CommonConfig:
    """Validate user-given hyperparameters for `task` (parsed already, or a name) into its config.

    An unknown name is reported as the request's field (`params.<name>`), with the task's
    parameters and the closest of them.
    """
    task = task if isinstance(task, Task) else parse_task(task)
    cls = CONFIGS[task]
    names = [field.name for field in dataclasses.fields(cls)]
    for key in params or {}:
        if key not in names:
            raise unknown_parameter(key, names, param=f"params.{key}", owner=task.value)
    return parse_dataclass(cls, params)
