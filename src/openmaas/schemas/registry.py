"""What the API shows of models and model versions, and what it accepts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from openmaas.schemas.json_types import Integer
from openmaas.schemas.names import ALIAS_PATTERN, LABEL_PATTERN, MAX_VERSION, NAME_PATTERN, check_label

__all__ = ["ALIAS_PATTERN", "NAME_PATTERN"]


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
    version: Integer = Field(ge=1, le=MAX_VERSION)


MAX_TAG_KEY, MAX_TAG_VALUE = 64, 256  # characters; `registry.update_tags` checks them


class TagsUpdate(BaseModel):
    """Tags to set; a null value removes that tag."""

    tags: dict[str, str | None] = Field(
        json_schema_extra={
            "propertyNames": {"pattern": LABEL_PATTERN, "minLength": 1, "maxLength": MAX_TAG_KEY},
            "additionalProperties": {
                "anyOf": [
                    {"type": "string", "pattern": LABEL_PATTERN, "maxLength": MAX_TAG_VALUE},
                    {"type": "null"},
                ]
            },
        }
    )

    @field_validator("tags")
    @classmethod
    def _labels(cls, tags: dict[str, str | None]) -> dict[str, str | None]:
        for key, value in tags.items():
            check_label(key)
            if value is not None:
                check_label(value)
        return tags


class Comparison(BaseModel):
    object: Literal["model.comparison"] = "model.comparison"
    versions: list[ModelVersionPublic]
    metrics: dict[str, dict[str, Any]]  # metric → {ref → value}
