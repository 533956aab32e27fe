"""The body of every error answer, OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong and, where it helps, what to do")
    type: str = Field(description="The kind of error, e.g. `invalid_request_error`, `not_found_error`")
    param: str | None = Field(description="The request field, query parameter or header at fault")
    code: str | None = Field(description="A stable machine-readable code, e.g. `not_found`, `invalid_value`")


class ErrorBody(BaseModel):
    error: ErrorDetail
