"""OpenAI's file objects (`/v1/files`), exactly as the `openai` SDK reads them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

# What a user may upload, and what only the platform writes (a job's results, a batch's output).
UPLOAD_PURPOSES = ("fine-tune", "batch", "user_data")
OUTPUT_PURPOSES = ("fine-tune-results", "batch_output")
FilePurpose = Literal["fine-tune", "batch", "user_data", "fine-tune-results", "batch_output"]


class FilePublic(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int  # Unix seconds, as OpenAI sends them
    expires_at: int | None = None
    filename: str
    purpose: FilePurpose
    # Deprecated by OpenAI but still sent: a file is listed only once it passed its checks.
    status: Literal["processed"] = "processed"
    status_details: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
