"""Request schema of `POST /v1/optimizations`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from openmaas.schemas.json_types import JSON_INTEGER, Boolean, Number
from openmaas.schemas.names import ModelRefText

# The methods `optimize/methods.py` parses, as the OpenAPI document states them.
METHOD_PATTERN = r"^(onnx-fp32|dynamic-int8|static-int8|prune-(0?[1-9]|[1-8][0-9]|9[0-5]))$"


class OptimizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelRefText = Field(
        min_length=1, max_length=140, description="The version to optimise: name:3 or name@alias"
    )
    method: str = Field(
        min_length=1,
        max_length=40,
        description="onnx-fp32, dynamic-int8, static-int8 or prune-N (N percent, 1 to 95)",
        json_schema_extra={"pattern": METHOD_PATTERN},
    )
    max_metric_drop: Number | None = Field(
        None, ge=0.0, le=1.0, description="Largest allowed drop of the test metric (default: the server's)"
    )
    force: Boolean = Field(False, description="Keep the result even if its metric drops more than allowed")
    max_attempts: Annotated[int, Field(ge=1, le=10), JSON_INTEGER] | None = None
