"""Datasets: the list (a page at a time), an upload streamed to the same service as
`POST /v1/datasets` (the page sends the file with a progress bar; nothing half-written stays when
it fails), one version's validation report with each problem's location, preview rows of a valid
table, and delete — the same scopes and tenant isolation as `/v1/datasets`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from openmaas import errors
from openmaas.console import sessions
from openmaas.console.web import (
    PREFIX,
    ConsoleRoute,
    check_csrf,
    platform_of,
    redirect,
    render,
    signed_form,
    signed_in,
    validated,
)
from openmaas.datasets import service as dataset_service
from openmaas.datasets.preview import preview_rows
from openmaas.datasets.tables import DatasetStatus
from openmaas.registry import service as registry
from openmaas.schemas.names import FileName, Label

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

After = Annotated[str | None, Query(max_length=100)]
# The gateway leaves this route's body to it (as `/v1/datasets`'): the upload's own limit applies.
_STREAMED = {"x-streamed-body": True}


@router.get("/datasets", name="console.datasets")
def datasets_page(request: Request, after: After = None, deleted: After = None) -> Response:
    return _list(request, after=after, deleted=deleted)


def _list(request: Request, *, status: int = 200, error: Any = None, **given: Any) -> Response:
    signed = signed_in(request)
    signed.principal.require("datasets:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        page = dataset_service.list_datasets(
            session, org_id, name=None, limit=platform.settings.default_page_limit, after=given.get("after")
        )
    return render(
        request,
        "datasets.html",
        signed,
        status=status,
        page=page,
        error=error,
        max_bytes=platform.settings.max_dataset_bytes,
        **{"after": None, "deleted": None, **given},
    )


@router.post("/datasets/upload", name="console.datasets.upload", openapi_extra=_STREAMED)
async def upload(
    request: Request,
    name: Annotated[str, Query(max_length=100)] = "",
    filename: Annotated[FileName | None, Query(max_length=255)] = None,
    target: Annotated[Label | None, Query(max_length=200)] = None,
) -> Response:
    """The file as the body (the page's XHR reports its progress), the session's CSRF token in a
    header; answers JSON: the version's page to go to, or the API's error."""
    try:
        signed = await run_in_threadpool(signed_in, request)
        if not sessions.csrf_matches(signed.csrf_token, request.headers.get("x-csrf-token")):
            raise errors.PermissionDenied(
                "The page's security token is missing or stale; reload the page.", code="csrf_failed"
            )
        signed.principal.require("datasets:write")
        org_id = signed.principal.require_org()
        if not name:
            raise errors.ValidationFailed("Name the dataset.", param="name")
        result = await platform_of(request).dataset_uploads.receive(
            org_id,
            request.stream(),
            name=name,
            filename=filename,
            target=target or None,
            declared_bytes=_declared(request),
        )
    except errors.OpenMaaSError as exc:
        return Response(orjson.dumps(exc.to_dict()), status_code=exc.status, media_type="application/json")
    url = f"{PREFIX}/datasets/{result.dataset.id}"
    body = orjson.dumps({"id": result.dataset.id, "created": result.created, "url": url})
    return Response(body, status_code=201 if result.created else 200, media_type="application/json")


@router.post("/datasets/upload-form", name="console.datasets.upload_form", openapi_extra=_STREAMED)
async def upload_form(request: Request) -> Response:
    """Without JavaScript: the same upload as a plain multipart form (`csrf_token`, `name`,
    `target`, `file`), answered with a redirect to the new version, or the page with the error."""
    signed = await run_in_threadpool(signed_in, request)  # before reading a byte of the body
    try:
        signed.principal.require("datasets:write")
        org_id = signed.principal.require_org()
        form = await request.form(max_files=1, max_fields=4)
        check_csrf(signed, form)
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise errors.ValidationFailed("Choose a file to upload.", param="file")
        name = str(form.get("name") or "").strip()
        if not name:
            raise errors.ValidationFailed("Name the dataset.", param="name")
        fields = validated(_PlainUpload, {"filename": upload.filename, "target": form.get("target") or None})
        result = await platform_of(request).dataset_uploads.receive(
            org_id,
            _chunks(upload),
            name=name,
            filename=fields.filename,
            target=fields.target,
            declared_bytes=upload.size,
        )
    except errors.OpenMaaSError as exc:
        if isinstance(exc, errors.PermissionDenied):
            raise  # the error page: a forged form, or a key without the scope
        failure = exc
        return await run_in_threadpool(lambda: _list(request, error=failure, status=failure.status))
    return redirect(f"{PREFIX}/datasets/{result.dataset.id}")


@router.get("/datasets/{dataset_id}", name="console.dataset")
def dataset_page(request: Request, dataset_id: str) -> Response:
    signed = signed_in(request)
    signed.principal.require("datasets:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        row = dataset_service.get_dataset(session, org_id, dataset_id)
        dataset = dataset_service.dataset_public(row)
        stored = row.path
        used_by = registry.versions_trained_on(session, org_id, row.id, 20)
    preview = error = None
    if dataset.status == DatasetStatus.READY.value:
        try:
            with platform.store.reading(stored) as path:
                preview = preview_rows(path, dataset.format)
        except (ValueError, OSError) as exc:  # validated, yet unreadable now: say so, not a 500
            error = f"The preview cannot be read: {type(exc).__name__}."
    issues = dataset.issues
    return render(
        request,
        "dataset.html",
        signed,
        dataset=dataset,
        errors_=[i for i in issues if i.get("severity", "error") == "error"],
        warnings=[i for i in issues if i.get("severity") == "warning"],
        columns=(dataset.schema_ or {}).get("columns") or [],
        classes=(dataset.schema_ or {}).get("classes") or {},
        preview=preview,
        preview_error=error,
        used_by=used_by,
    )


@router.get("/datasets/{dataset_id}/status.json", name="console.dataset_status")
def dataset_status(request: Request, dataset_id: str) -> Response:
    """The version's status, which the page polls while it is validated."""
    signed = signed_in(request)
    signed.principal.require("datasets:read")
    org_id = signed.principal.require_org()
    with platform_of(request).db.read_session() as session:
        status = dataset_service.get_dataset(session, org_id, dataset_id).status
    body = orjson.dumps({"status": status})
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.post("/datasets/{dataset_id}/delete", name="console.datasets.delete")
async def delete(request: Request, dataset_id: str) -> Response:
    signed, _ = await signed_form(request)
    signed.principal.require("datasets:write")
    org_id = signed.principal.require_org()
    platform = platform_of(request)

    def remove() -> str:
        # Its own transaction: the file goes only once the row is gone for good.
        with platform.db.session() as session:
            public = dataset_service.delete_dataset(session, org_id, dataset_id, registry.versions_trained_on)
        platform.store.remove(platform.store.dataset_dir(org_id, public.id))
        return f"{public.name}:{public.version}"

    gone = await run_in_threadpool(remove)
    return redirect(f"{PREFIX}/datasets?deleted={gone}")


class _PlainUpload(BaseModel):
    filename: FileName
    target: Label | None = None


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1 << 20):
        yield chunk


def _declared(request: Request) -> int | None:
    """The body's `Content-Length` (the gateway checked it is digits), to refuse one over the
    limit before reading it."""
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None else None
