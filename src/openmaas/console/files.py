"""Files (OpenAI's `/v1/files`): the list with a purpose filter, an upload (`fine-tune` or
`batch`) sent with a progress bar — or, without JavaScript, as a plain form that redirects —, a
refused fine-tune file's problems each with its line, and delete. The upload goes to the same
service as `POST /v1/files` (`platform.file_uploads`), with the datasets scopes as there."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from openmaas import errors
from openmaas.console.web import (
    PREFIX,
    ConsoleRoute,
    check_csrf,
    platform_of,
    redirect,
    render,
    signed_form,
    signed_in,
)
from openmaas.datasets import files as file_service
from openmaas.schemas.files import OUTPUT_PURPOSES, UPLOAD_PURPOSES

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

After = Annotated[str | None, Query(max_length=100)]
# The gateway leaves this route's body to it (as `/v1/files`'): the upload's own limit applies.
_STREAMED = {"x-streamed-body": True}
_CHUNK = 1 << 20


@router.get("/files", name="console.files")
def files_page(
    request: Request,
    after: After = None,
    purpose: Annotated[str | None, Query(max_length=40)] = None,
    uploaded: After = None,
    deleted: After = None,
) -> Response:
    return _page(request, after=after, purpose=purpose, uploaded=uploaded, deleted=deleted)


@router.post("/files/upload", name="console.files.upload", openapi_extra=_STREAMED)
async def upload(request: Request) -> Response:
    """A multipart form (`csrf_token`, `purpose`, `file`): the page's XHR asks for JSON (the
    file, or the API's error with its located issues); a plain form gets a redirect, or the page
    with the error in it."""
    wants_json = "application/json" in request.headers.get("accept", "")
    try:
        signed = await run_in_threadpool(signed_in, request)  # before reading a byte of the body
        signed.principal.require("datasets:write")
        org_id = signed.principal.require_org()
        form = await request.form(max_files=1, max_fields=4)
        check_csrf(signed, form)
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise errors.ValidationFailed("Choose a file to upload.", param="file")
        boundary = secrets.token_hex(16)
        body = _multipart(boundary, str(form.get("purpose") or ""), upload)
        created = await platform_of(request).file_uploads.receive(
            org_id, body, content_type=f"multipart/form-data; boundary={boundary}", declared_bytes=upload.size
        )
    except errors.OpenMaaSError as exc:
        if wants_json:
            return _json(exc.to_dict(), exc.status)
        if isinstance(exc, errors.PermissionDenied):
            raise  # the error page: a forged form, or a key without the scope
        failure = exc
        return await run_in_threadpool(lambda: _page(request, error=failure, status=failure.status))
    url = f"{PREFIX}/files?uploaded={created.id}"
    return _json({"id": created.id, "url": url}, 201) if wants_json else redirect(url)


@router.post("/files/{file_id}/delete", name="console.files.delete")
async def delete(request: Request, file_id: str) -> Response:
    signed, _ = await signed_form(request)
    signed.principal.require("datasets:write")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    gone = await run_in_threadpool(file_service.delete_file, platform.db, platform.store, org_id, file_id)
    return redirect(f"{PREFIX}/files?deleted={gone.id}")


def _json(body: object, status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _page(request: Request, *, status: int = 200, error: Any = None, **given: Any) -> Response:
    signed = signed_in(request)
    signed.principal.require("datasets:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    purpose = given.get("purpose")
    purpose = purpose if purpose in UPLOAD_PURPOSES + OUTPUT_PURPOSES else None
    with platform.db.read_session() as session:
        page = file_service.list_files(
            session,
            org_id,
            purpose=purpose,
            limit=platform.settings.default_page_limit,
            after=given.get("after"),
            ascending=False,
        )
    return render(
        request,
        "files.html",
        signed,
        status=status,
        page=page,
        shown=purpose,
        purposes=[p for p in UPLOAD_PURPOSES if p != "user_data"],
        error=error,
        issues=getattr(error, "issues", None) or [],
        max_bytes=platform.settings.max_dataset_bytes,
        **{"after": None, "uploaded": None, "deleted": None, **given, "purpose": purpose},
    )


async def _multipart(boundary: str, purpose: str, upload: UploadFile) -> AsyncIterator[bytes]:
    """The form as `/v1/files` receives it, streamed from the spooled upload: the file service
    reads and checks it exactly as it reads an API client's."""
    name = "".join(c for c in (upload.filename or "file") if c not in '"\r\n\\') or "file"
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    while chunk := await upload.read(_CHUNK):
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()
