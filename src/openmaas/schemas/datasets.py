"""What the API shows of dataset versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
