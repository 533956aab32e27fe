"""`/v1/files`, as OpenAI shapes it: upload a file as a multipart form (`file` and `purpose`,
streamed to the store under its own size limit, a `fine-tune` file checked line by line), list
with a purpose filter and cursor pages, retrieve, read the content, delete."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from openmaas.api.deps import PageDep, PlatformDep, ReadSessionDep, scope
from openmaas.api.middleware import STREAMED_BODY, declared_length
from openmaas.api.responses import KEYED, errors
from openmaas.datasets import files as file_service
from openmaas.schemas.files import FileDeleted, FilePublic, FilePurpose
from openmaas.schemas.pages import Page
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1", tags=["files"], responses=KEYED)

# Files are data: the datasets scopes cover them.
FilesRead = Annotated[Principal, scope("datasets:read")]
FilesWrite = Annotated[Principal, scope("datasets:write")]
_UPLOAD_DOC = {
    **STREAMED_BODY,
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["fine-tune", "batch", "user_data"]},
                    },
                }
            }
        },
    },
}


@router.post(
    "/files",
    response_model=FilePublic,
    name="files.create",
    openapi_extra=_UPLOAD_DOC,
    responses=errors(400, 413, 415, 422, 507),
)
async def create_file(request: Request, platform: PlatformDep, caller: FilesWrite) -> object:
    return await platform.file_uploads.receive(
        caller.require_org(),
        request.stream(),
        content_type=request.headers.get("content-type", ""),
        declared_bytes=declared_length(request),
    )


@router.get("/files", response_model=Page[FilePublic], name="files.list", responses=errors(422))
def list_files(
    session: ReadSessionDep,
    caller: FilesRead,
    page: PageDep,
    purpose: Annotated[FilePurpose | None, Query()] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="By creation time")] = "desc",
) -> object:
    return file_service.list_files(
        session,
        caller.require_org(),
        purpose=purpose,
        limit=page.limit,
        after=page.after,
        ascending=order == "asc",
    )


@router.get("/files/{file_id}", response_model=FilePublic, name="files.get", responses=errors(404))
def get_file(file_id: str, session: ReadSessionDep, caller: FilesRead) -> object:
    return file_service.file_public(file_service.get_file(session, caller.require_org(), file_id))


@router.get(
    "/files/{file_id}/content",
    response_class=FileResponse,
    name="files.content",
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(404)},
)
def file_content(file_id: str, platform: PlatformDep, caller: FilesRead) -> FileResponse:
    with platform.db.read_session() as session:
        row = file_service.get_file(session, caller.require_org(), file_id)
        path, filename = row.path, row.filename
    # The local copy is held until the response has been sent.
    held = ExitStack()
    local = held.enter_context(platform.store.reading(path))
    return FileResponse(
        local,
        media_type="application/octet-stream",
        filename=filename,
        background=BackgroundTask(held.close),
    )


@router.delete("/files/{file_id}", response_model=FileDeleted, name="files.delete", responses=errors(404))
def delete_file(file_id: str, platform: PlatformDep, caller: FilesWrite) -> object:
    # Its own transaction: the bytes go only after the row's removal committed.
    return file_service.delete_file(platform.db, platform.store, caller.require_org(), file_id)
