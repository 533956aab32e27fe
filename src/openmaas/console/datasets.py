"""Datasets: the list (a page at a time), an upload streamed to the same service as
`POST /v1/datasets` (the page sends the file with a progress bar; nothing half-written stays when
it fails), one version's validation report with each problem's location, preview rows of a valid
table, and delete — the same scopes and tenant isolation as `/v1/datasets`."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openmaas import errors
from openmaas.console import sessions
from openmaas.console.web import PREFIX, ConsoleRoute, platform_of, redirect, render, signed_form, signed_in
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
    signed = signed_in(request)
    signed.principal.require("datasets:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        page = dataset_service.list_datasets(
            session, org_id, name=None, limit=platform.settings.default_page_limit, after=after
        )
    return render(
        request,
        "datasets.html",
        signed,
        page=page,
        after=after,
        deleted=deleted,
        max_bytes=platform.settings.max_dataset_bytes,
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


def _declared(request: Request) -> int | None:
    """The body's `Content-Length` (the gateway checked it is digits), to refuse one over the
    limit before reading it."""
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None else None
