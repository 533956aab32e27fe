"""`POST /v1/registry/imports?name=NAME`: a zipped Hugging Face model folder (or, with
`format=onnx`, a raw ONNX file; with `format=gguf`, a llama.cpp GGUF file), streamed to disk,
checked and registered as a new version of model NAME (see `openmaas.registry.imports`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from openmaas.api.deps import PlatformDep, PrincipalDep
from openmaas.api.middleware import STREAMED_BODY, declared_length, refuse_forms
from openmaas.api.responses import KEYED, errors
from openmaas.schemas.registry import ModelVersionPublic
from openmaas.tasks import TENSOR_INFERENCE

router = APIRouter(prefix="/v1/registry", tags=["registry"], responses=KEYED)


@router.post(
    "/imports",
    status_code=201,
    response_model=ModelVersionPublic,
    name="registry.imports.create",
    responses=errors(400, 409, 413, 415, 422, 507),
    openapi_extra=STREAMED_BODY,
)
async def import_model(
    request: Request,
    platform: PlatformDep,
    principal: PrincipalDep,
    name: Annotated[str, Query(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")],
    source_format: Annotated[str, Query(alias="format", pattern="^(huggingface|onnx|gguf)$")] = "huggingface",
    task: Annotated[str, Query(max_length=40)] = TENSOR_INFERENCE,
) -> ModelVersionPublic:
    principal.require("models:write")
    refuse_forms(request)
    return await platform.model_imports.receive(
        principal.require_org(),
        request.stream(),
        name=name,
        source_format=source_format,
        task=task,
        declared_bytes=declared_length(request),
    )
