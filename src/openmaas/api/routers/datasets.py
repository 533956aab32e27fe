"""`/v1/datasets`: upload a dataset version (the raw file as the request body, streamed to disk
under its own size limit), list and get versions with their validation status and problems, delete
one nothing depends on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from openmaas.api.deps import PageDep, PlatformDep, ReadSessionDep, scope
from openmaas.api.middleware import STREAMED_BODY, declared_length, refuse_forms
from openmaas.api.responses import KEYED, errors
from openmaas.datasets import service as dataset_service
from openmaas.registry import service as registry
from openmaas.schemas.datasets import DatasetPublic
from openmaas.schemas.names import DatasetRefText, FileName, Label
from openmaas.schemas.pages import Page
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1", tags=["datasets"], responses=KEYED)

DatasetsRead = Annotated[Principal, scope("datasets:read")]
DatasetsWrite = Annotated[Principal, scope("datasets:write")]
_UPLOAD_DOC = {
    **STREAMED_BODY,
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


@router.post(
    "/datasets",
    status_code=201,
    response_model=DatasetPublic,
    name="datasets.upload",
    openapi_extra=_UPLOAD_DOC,
    responses={
        200: {"model": DatasetPublic, "description": "These bytes were already uploaded"},
        **errors(400, 409, 413, 415, 422, 507),
    },
)
async def upload_dataset(
    request: Request,
    platform: PlatformDep,
    caller: DatasetsWrite,
    name: Annotated[str, Query(min_length=1, max_length=100, description="Dataset name")],
    filename: Annotated[FileName | None, Query(max_length=255, description="The file's name")] = None,
    target: Annotated[Label | None, Query(max_length=200, description="Label column to check")] = None,
) -> object:
    refuse_forms(request)
    result = await platform.dataset_uploads.receive(
        caller.require_org(),
        request.stream(),
        name=name,
        filename=filename,
        target=target,
        declared_bytes=declared_length(request),
    )
    return JSONResponse(result.dataset.model_dump(mode="json"), status_code=201 if result.created else 200)


@router.get("/datasets", response_model=Page[DatasetPublic], name="datasets.list", responses=errors(422))
def list_datasets(
    session: ReadSessionDep,
    caller: DatasetsRead,
    page: PageDep,
    name: Annotated[str | None, Query(max_length=100)] = None,
) -> object:
    return dataset_service.list_datasets(
        session, caller.require_org(), name=name, limit=page.limit, after=page.after
    )


@router.get("/datasets/{ref}", response_model=DatasetPublic, name="datasets.get", responses=errors(404, 422))
def get_dataset(ref: DatasetRefText, session: ReadSessionDep, caller: DatasetsRead) -> object:
    """By id, by name (its latest version) or as `name:version`."""
    return dataset_service.dataset_public(dataset_service.get_dataset(session, caller.require_org(), ref))


@router.delete(
    "/datasets/{ref}", response_model=DatasetPublic, name="datasets.delete", responses=errors(404, 409, 422)
)
def delete_dataset(ref: DatasetRefText, platform: PlatformDep, caller: DatasetsWrite) -> object:
    """409 `dataset_in_use` while it is validated or a model version names it in its lineage;
    nothing is deleted then."""
    org_id = caller.require_org()
    # Its own transaction: the file goes only once the row is gone for good.
    with platform.db.session() as session:
        public = dataset_service.delete_dataset(session, org_id, ref, registry.versions_trained_on)
    platform.store.remove(platform.store.dataset_dir(org_id, public.id))
    return public
