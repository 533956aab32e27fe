"""`GET /v1/models`, in OpenAI's shape: the models this organisation can call.

A model becomes callable by deploying it: ready deployments register in `Platform.served_models`.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from openmaas.api.deps import PrincipalDep

router = APIRouter(prefix="/v1", tags=["models"])


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@router.get("/models", response_model=ModelList, name="models.list")
async def list_models(request: Request, principal: PrincipalDep) -> ModelList:
    # A hot route: one dependency only (each costs FastAPI more than the work it does).
    platform = request.app.state.platform
    org_id = principal.require_org()
    cards = [
        ModelCard(id=model.name, created=model.created, owned_by=model.owner)
        for model in platform.served_models.visible_to(org_id)
    ]
    return ModelList(data=cards)
