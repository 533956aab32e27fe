"""What the API shows of dataset versions, models and model versions, and what it accepts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from openmaas.datasets.tables import Dataset
from openmaas.registry.tables import ModelVersion, RegisteredModel

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]{0,63}$"


class DatasetPublic(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True, validate_by_alias=True)

    id: str
    object: Literal["dataset"] = "dataset"
    name: str
    version: int
    filename: str | None
    format: str
    sha256: str
    size_bytes: int
    status: str
    validation_job_id: str | None
    rows: int | None
    schema_: dict[str, Any] | None = Field(alias="schema")
    issues: list[dict[str, Any]]
    created_at: datetime

    @classmethod
    def of(cls, row: Dataset) -> DatasetPublic:
        return cls(
            id=row.id,
            name=row.name,
            version=row.version,
            filename=row.filename,
            format=row.format,
            sha256=row.sha256,
            size_bytes=row.size_bytes,
            status=row.status,
            validation_job_id=row.validation_job_id,
            rows=row.rows,
            schema=row.schema_,
            issues=row.issues or [],
            created_at=row.created_at,
        )


class Lineage(BaseModel):
    dataset_id: str | None
    job_id: str | None
    parent_version_id: str | None


class ModelVersionPublic(BaseModel):
    id: str
    object: Literal["model.version"] = "model.version"
    model: str
    version: int
    ref: str
    task: str
    metrics: dict[str, Any]
    tags: dict[str, str]
    aliases: list[str]
    lineage: Lineage
    created_at: datetime
    manifest: dict[str, Any] | None = None

    @classmethod
    def of(
        cls, model: RegisteredModel, row: ModelVersion, aliases: list[str], *, manifest: bool = False
    ) -> ModelVersionPublic:
        return cls(
            id=row.id,
            model=model.name,
            version=row.version,
            ref=f"{model.name}:{row.version}",
            task=row.task,
            metrics=row.metrics,
            tags=row.tags,
            aliases=sorted(aliases),
            lineage=Lineage(
                dataset_id=row.dataset_id, job_id=row.job_id, parent_version_id=row.parent_version_id
            ),
            created_at=row.created_at,
            manifest=row.manifest if manifest else None,
        )


class ModelPublic(BaseModel):
    id: str
    object: Literal["registered_model"] = "registered_model"
    name: str
    task: str
    tags: dict[str, str]
    latest_version: int | None
    aliases: dict[str, int]
    created_at: datetime


class AliasSet(BaseModel):
    version: int = Field(ge=1)


class TagsUpdate(BaseModel):
    """Tags to set; a null value removes that tag."""

    tags: dict[str, str | None]


class Comparison(BaseModel):
    object: Literal["model.comparison"] = "model.comparison"
    versions: list[ModelVersionPublic]
    metrics: dict[str, dict[str, Any]]  # metric → {ref → value}


class TrainingJobCreate(BaseModel):
    task: str = Field(description="tabular-classification, tabular-regression, image-classification, …")
    dataset: str = Field(min_length=1, max_length=140, description="Dataset name, name:version or id")
    target: str | None = Field(None, max_length=200, description="The label column, for tables")
    params: dict[str, Any] = Field(default_factory=dict, description="Hyperparameters of the task")
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    model: str | None = Field(
        None, pattern=NAME_PATTERN, description="Registry name (default: the dataset's)"
    )
    parent: str | None = Field(None, max_length=140, description="A model version this one derives from")
    max_attempts: int | None = Field(None, ge=1, le=10)
