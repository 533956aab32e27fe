"""`POST /v1/registry/imports?name=NAME`: a zipped Hugging Face model folder (or, with
`format=onnx`, a raw ONNX file), streamed to disk, checked and registered as a new version of
model NAME."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from openmaas import errors
from openmaas.api.deps import PrincipalDep
from openmaas.api.middleware import STREAMED_BODY
from openmaas.bootstrap import Platform
from openmaas.ids import new_id
from openmaas.registry import hf_import, onnx_import
from openmaas.registry import service as registry
from openmaas.schemas.registry import ModelVersionPublic

router = APIRouter(prefix="/v1/registry", tags=["registry"])


@router.post(
    "/imports",
    status_code=201,
    response_model=ModelVersionPublic,
    name="registry.imports.create",
    openapi_extra=STREAMED_BODY,
)
async def import_model(
    request: Request,
    principal: PrincipalDep,
    name: Annotated[str, Query(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")],
    source_format: Annotated[str, Query(alias="format", pattern="^(huggingface|onnx)$")] = "huggingface",
    task: Annotated[str, Query(max_length=40)] = onnx_import.TENSOR_INFERENCE,
) -> ModelVersionPublic:
    principal.require("models:write")
    org_id = principal.require_org()
    platform: Platform = request.app.state.platform
    limit = platform.settings.max_import_bytes
    root = platform.store.path(".")  # the staging folder is renamed into the store: same filesystem
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    try:
        archive = staging / "upload.zip"
        size = 0
        with open(archive, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise errors.PayloadTooLarge(f"the upload is larger than {limit} bytes", param="file")
                out.write(chunk)
        version_id = new_id("ver_")
        relative = platform.store.model_dir(org_id, version_id)
        folder = platform.store.path(relative)
        prepare = (
            functools.partial(onnx_import.install, archive, folder, task=task)
            if source_format == "onnx"
            else functools.partial(_unpack, archive, folder, limit)
        )
        return await run_in_threadpool(_register, platform, org_id, name, prepare, relative, version_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(archive: Path, folder: Path, max_bytes: int) -> dict[str, Any]:
    hf_import.extract(archive, folder, max_bytes=max_bytes)
    try:
        return hf_import.inspect_folder(folder).manifest
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _register(
    platform: Platform,
    org_id: str,
    name: str,
    prepare: Callable[[], dict[str, Any]],
    relative: str,
    version_id: str,
) -> ModelVersionPublic:
    """Build the artifact folder (`prepare` returns its manifest), then register it."""
    manifest = prepare()
    folder = platform.store.path(relative)
    try:
        with platform.db.session() as session:
            model, version = registry.register_version(
                session,
                version_id=version_id,
                org_id=org_id,
                model_name=name,
                artifact_path=relative,
                manifest=manifest,
                lineage={},
                now=platform.clock.now(),
            )
            return registry.version_public(session, model, version)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
