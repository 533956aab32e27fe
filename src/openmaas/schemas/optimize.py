"""Request schema of `POST /v1/optimizations`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OptimizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1, max_length=140, description="The version to optimise: name:3 or name@alias"
    )
    method: str = Field(
        min_length=1, max_length=40, description="onnx-fp32, dynamic-int8, static-int8 or prune-N"
    )
    max_metric_drop: float | None = Field(
        None, ge=0.0, le=1.0, description="Largest allowed drop of the test metric (default: the server's)"
    )
    force: bool = Field(False, description="Keep the result even if its metric drops more than allowed")
    max_attempts: int | None = Field(None, ge=1, le=10)
