"""`/v1/registry`: trained models and their immutable versions — list, show, compare, alias, tag,
download and delete. Versions are addressed as `name`, `name:3` or `name@alias`.

(`/v1/models` stays OpenAI's list of callable, deployed models.)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from openmaas.api.deps import PageDep, PlatformDep, ReadSessionDep, SessionDep, scope
from openmaas.api.responses import JSON_BODY, KEYED, errors
from openmaas.registry import service as registry
from openmaas.schemas.names import ALIAS_PATTERN, ModelRefText
from openmaas.schemas.pages import Page
from openmaas.schemas.registry import (
    AliasSet,
    Comparison,
    ModelPublic,
    ModelVersionPublic,
    TagsUpdate,
)
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1/registry", tags=["registry"], responses=KEYED)

ModelsRead = Annotated[Principal, scope("models:read")]
ModelsWrite = Annotated[Principal, scope("models:write")]


@router.get("/models", response_model=Page[ModelPublic], name="registry.models.list", responses=errors(422))
def list_models(session: ReadSessionDep, caller: ModelsRead, page: PageDep) -> object:
    return registry.list_models(session, caller.require_org(), limit=page.limit, after=page.after)


@router.get(
    "/models/{name}", response_model=ModelPublic, name="registry.models.get", responses=errors(404, 422)
)
def get_model(name: str, session: ReadSessionDep, caller: ModelsRead) -> object:
    return registry.model_public(session, registry.get_model(session, caller.require_org(), name))


@router.delete(
    "/models/{name}",
    response_model=ModelPublic,
    name="registry.models.delete",
    responses=errors(404, 409, 422),
)
def delete_model(name: str, platform: PlatformDep, caller: ModelsWrite) -> object:
    """The model with all its versions and aliases. 409 `version_in_use` while a live marketplace
    listing, a deployment or a traffic split uses one of its versions; nothing is deleted then."""
    # Its own transaction: the files go only once the rows are gone for good.
    with platform.db.session() as session:
        public, paths = registry.delete_model(session, caller.require_org(), name, platform.version_holders)
    for path in paths:
        platform.store.remove(path)
    return public


@router.get(
    "/models/{name}/versions",
    response_model=Page[ModelVersionPublic],
    name="registry.versions.list",
    responses=errors(404, 422),
)
def list_versions(name: str, session: ReadSessionDep, caller: ModelsRead, page: PageDep) -> object:
    return registry.list_versions(session, caller.require_org(), name, limit=page.limit, after=page.after)


@router.put(
    "/models/{name}/aliases/{alias}",
    response_model=ModelPublic,
    name="registry.aliases.set",
    responses=errors(*JSON_BODY, 404),
)
def set_alias(
    name: str,
    alias: Annotated[str, PathParam(json_schema_extra={"pattern": ALIAS_PATTERN})],
    body: AliasSet,
    session: SessionDep,
    platform: PlatformDep,
    caller: ModelsWrite,
) -> object:
    return registry.set_alias(session, caller.require_org(), name, alias, body.version, platform.clock.now())


@router.delete(
    "/models/{name}/aliases/{alias}",
    response_model=ModelPublic,
    name="registry.aliases.delete",
    responses=errors(404, 422),
)
def remove_alias(name: str, alias: str, session: SessionDep, caller: ModelsWrite) -> object:
    return registry.remove_alias(session, caller.require_org(), name, alias)


@router.get("/compare", response_model=Comparison, name="registry.compare", responses=errors(404, 422))
def compare(
    session: ReadSessionDep,
    caller: ModelsRead,
    refs: Annotated[
        list[ModelRefText], Query(description="Versions to compare, e.g. churn:1&refs=churn@production")
    ],
) -> object:
    versions, metrics = registry.compare(session, caller.require_org(), refs)
    return Comparison(versions=versions, metrics=metrics)


@router.get(
    "/versions/{ref}",
    response_model=ModelVersionPublic,
    name="registry.versions.get",
    responses=errors(404, 422),
)
def get_version(ref: ModelRefText, session: ReadSessionDep, caller: ModelsRead) -> object:
    """With its manifest (task, architecture, signatures, preprocessing, metrics, curves, params)."""
    model, version = registry.resolve(session, caller.require_org(), ref)
    return registry.version_public(session, model, version, manifest=True)


@router.patch(
    "/versions/{ref}",
    response_model=ModelVersionPublic,
    name="registry.versions.tag",
    responses=errors(*JSON_BODY, 404),
)
def tag_version(ref: ModelRefText, body: TagsUpdate, session: SessionDep, caller: ModelsWrite) -> object:
    return registry.update_tags(session, caller.require_org(), ref, body.tags)


@router.delete(
    "/versions/{ref}",
    response_model=ModelVersionPublic,
    name="registry.versions.delete",
    responses=errors(404, 409, 422),
)
def delete_version(ref: ModelRefText, platform: PlatformDep, caller: ModelsWrite) -> object:
    """409 `version_in_use` while an alias, a live marketplace listing, a deployment or a traffic
    split uses the version; the answer names them and nothing is deleted."""
    # Its own transaction: the files go only once the row is gone for good.
    with platform.db.session() as session:
        public, path = registry.delete_version(session, caller.require_org(), ref, platform.version_holders)
    platform.store.remove(path)
    return public


@router.get(
    "/versions/{ref}/download",
    response_class=FileResponse,
    name="registry.versions.download",
    responses={
        200: {"content": {"application/zip": {}}, "description": "The artifact folder as a zip"},
        **errors(404, 422),
    },
)
def download_version(ref: ModelRefText, platform: PlatformDep, caller: ModelsRead) -> FileResponse:
    # Its own short read: zipping the folder can take long, and must not hold a connection meanwhile.
    with platform.db.read_session() as session:
        model, version = registry.resolve(session, caller.require_org(), ref)
    scratch = Path(tempfile.mkdtemp(prefix="openmaas-download-"))
    with platform.store.reading(version.artifact_path) as folder:
        archive = shutil.make_archive(str(scratch / "artifact"), "zip", root_dir=folder)
    return FileResponse(
        archive,
        media_type="application/zip",
        filename=f"{model.name}-{version.version}.zip",
        background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True),
    )
