"""The OpenAI-compatible routes: the model list and retrieve, chat completions, completions, embeddings and
responses (the Responses API).

Shapes follow OpenAI so the official SDK works unchanged. A hot path: one dependency (the
caller), the request handed to the inference use-case (`serving.inference`), which finds the
model in the in-memory directory and meters the call; no database work per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from openmaas.api.deps import PrincipalDep
from openmaas.api.middleware import AUDIT_OFF
from openmaas.api.responses import INFERENCE, KEYED, errors
from openmaas.errors import NotFound
from openmaas.serving.adapters import PREFIX as FINE_TUNED
from openmaas.serving.inference import Inference, embedding_list
from openmaas.serving.openai_types import (
    EVENT_STREAM,
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    ModelCard,
    ModelList,
    TextCompletion,
)
from openmaas.serving.responses import Responses
from openmaas.serving.responses_types import DeletedResponse, ResponseObject, ResponseRequest
from openmaas.tenancy.auth import Principal

OPENAI_ROUTE = {**AUDIT_OFF, "x-openai-errors": True}

router = APIRouter(prefix="/v1", tags=["openai"], responses=KEYED)


def _inference(request: Request) -> Inference:
    inference: Inference = request.app.state.platform.inference
    return inference


def _json(payload: dict[str, Any], headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


def _sse(events: AsyncIterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers}
    )


async def _completion(
    request: Request, principal: Principal, body: ChatCompletionRequest | CompletionRequest
) -> Response:
    inference, request_id = _inference(request), request.state.request_id
    if body.stream:
        frames = await inference.stream(principal, body, request_id)
        return _sse(frames.result, frames.headers)
    answer = await inference.complete(principal, body, request_id)
    return _json(answer.result, answer.headers)


@router.get("/models", response_model=ModelList, name="models.list")
async def list_models(request: Request, principal: PrincipalDep) -> ModelList:
    """The models this organisation can call: its ready deployments (they register in
    `Platform.served_models`; those scaled to zero are the replica manager's), published ones, and
    its fine-tuned adapters (`ft:` ids) with those it bought for a base it deploys. A hot route:
    one dependency only."""
    org_id = principal.require_org()
    platform = request.app.state.platform
    models = platform.served_models.visible_to(org_id) + platform.replicas.cold_models(org_id)
    cards = [ModelCard(id=model.name, created=model.created, owned_by=model.owner) for model in models]
    return ModelList(data=cards + await platform.adapters.cards(org_id))


@router.get("/models/{model}", response_model=ModelCard, name="models.retrieve", responses=errors(404))
async def retrieve_model(model: str, request: Request, principal: PrincipalDep) -> ModelCard:
    """One model of `models.list`, or a checkpoint's id of a fine-tuning job; 404 for any other."""
    org_id = principal.require_org()
    platform = request.app.state.platform
    if model.startswith(FINE_TUNED):
        card: ModelCard = await platform.adapters.card(org_id, model)
        return card
    for served in platform.served_models.visible_to(org_id) + platform.replicas.cold_models(org_id):
        if served.name == model:
            return ModelCard(id=served.name, created=served.created, owned_by=served.owner)
    raise NotFound(f"The model {model!r} does not exist.", param="model", code="model_not_found")


@router.post(
    "/chat/completions",
    name="chat.completions.create",
    responses={200: {"model": ChatCompletion, "content": EVENT_STREAM}, **errors(*INFERENCE)},
    openapi_extra=OPENAI_ROUTE,
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, principal: PrincipalDep
) -> Response:
    return await _completion(request, principal, body)


@router.post(
    "/completions",
    name="completions.create",
    responses={200: {"model": TextCompletion, "content": EVENT_STREAM}, **errors(*INFERENCE)},
    openapi_extra=OPENAI_ROUTE,
)
async def text_completions(body: CompletionRequest, request: Request, principal: PrincipalDep) -> Response:
    return await _completion(request, principal, body)


def _responses(request: Request) -> Responses:
    responses: Responses = request.app.state.platform.responses
    return responses


@router.post(
    "/responses",
    name="responses.create",
    responses={200: {"model": ResponseObject, "content": EVENT_STREAM}, **errors(*INFERENCE)},
    openapi_extra=OPENAI_ROUTE,
)
async def create_response(body: ResponseRequest, request: Request, principal: PrincipalDep) -> Response:
    """OpenAI's Responses API, answered by the model's chat completion (serving/responses.py)."""
    responses, request_id = _responses(request), request.state.request_id
    if body.stream:
        events = await responses.stream(principal, body, request_id)
        return _sse(events.result, events.headers)
    answer = await responses.create(principal, body, request_id)
    return _json(answer.result, answer.headers)


@router.get(
    "/responses/{response_id}",
    name="responses.get",
    responses={200: {"model": ResponseObject}, **errors(404)},
    openapi_extra=OPENAI_ROUTE,
)
async def get_response(response_id: str, request: Request, principal: PrincipalDep) -> Response:
    """A stored response (`store` was not false), while it is kept (`responses_ttl_s`)."""
    return _json(await _responses(request).get(principal, response_id), {})


@router.delete(
    "/responses/{response_id}",
    name="responses.delete",
    responses={200: {"model": DeletedResponse}, **errors(404)},
    openapi_extra=OPENAI_ROUTE,
)
async def delete_response(response_id: str, request: Request, principal: PrincipalDep) -> Response:
    return _json(await _responses(request).delete(principal, response_id), {})


@router.post(
    "/embeddings",
    name="embeddings.create",
    responses={200: {"model": EmbeddingList}, **errors(*INFERENCE)},
    openapi_extra=OPENAI_ROUTE,
)
async def embeddings(body: EmbeddingRequest, request: Request, principal: PrincipalDep) -> Response:
    answer = await _inference(request).embed(principal, body, request.state.request_id)
    return _json(embedding_list(body, answer.result), answer.headers)
