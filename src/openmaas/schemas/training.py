"""What `POST /v1/training_jobs` accepts."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from openmaas.schemas.free_form import FreeForm
from openmaas.schemas.json_types import JSON_INTEGER
from openmaas.schemas.names import NAME_PATTERN, DatasetRefText, Label, ModelRefText

# The task families the platform trains (`openmaas.tasks.Task`, which the SDK does not import).
TRAINED_TASKS = (
    "tabular-classification",
    "tabular-regression",
    "image-classification",
    "text-classification",
    "audio-classification",
    "recommendation",
)


class TrainingJobCreate(BaseModel):
    task: str = Field(
        description="tabular-classification, tabular-regression, image-classification, …",
        json_schema_extra={"enum": list(TRAINED_TASKS)},
    )
    dataset: DatasetRefText = Field(
        min_length=1, max_length=140, description="Dataset name, name:version or id"
    )
    target: Label | None = Field(None, max_length=200, description="The label column, for tables")
    params: FreeForm = Field(default_factory=dict, description="Hyperparameters of the task")
    preprocessing: FreeForm = Field(default_factory=dict)
    model: str | None = Field(
        None, pattern=NAME_PATTERN, description="Registry name (default: the dataset's)"
    )
    parent: ModelRefText | None = Field(
        None, max_length=140, description="A model version this one derives from"
    )
    max_attempts: Annotated[int, Field(ge=1, le=10), JSON_INTEGER] | None = None
    workers: Annotated[int, Field(ge=1, le=256), JSON_INTEGER] = Field(
        1, description="Train data-parallel on this many workers (more than 1: the ray executor)"
    )
    cpus_per_worker: float = Field(1.0, gt=0, le=512, description="CPUs each worker reserves")
    gpus_per_worker: float = Field(0.0, ge=0, le=16, description="GPUs each worker reserves")
