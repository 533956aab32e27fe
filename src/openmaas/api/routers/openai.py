"""The OpenAI-compatible inference routes: chat completions, completions and embeddings.

Shapes follow OpenAI so the official SDK works unchanged. A hot path: one dependency (the
caller), the model looked up in the in-memory directory, no database work per request.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from openmaas import errors
from openmaas.api.deps import PrincipalDep
from openmaas.api.middleware import AUDIT_OFF
from openmaas.bootstrap import Platform
from openmaas.serving import completions
from openmaas.serving.directory import ServedModel
from openmaas.serving.openai_types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from openmaas.serving.runtimes import SENTENCE_EMBEDDING, TEXT_GENERATION
from openmaas.serving.usage import RequestUsage
from openmaas.tenancy import scopes
from openmaas.tenancy.auth import Principal

OPENAI_ROUTE = {**AUDIT_OFF, "x-openai-errors": True}

router = APIRouter(prefix="/v1", tags=["openai"])


def _served(request: Request, principal: Principal, model: str, task: str, what: str) -> ServedModel:
    principal.require(scopes.INFERENCE)
    platform: Platform = request.app.state.platform
    served = platform.served_models.lookup(principal.require_org(), model)
    if served is None:
        raise platform.replicas.missing_model(principal.require_org(), model)
    if served.runtime.task != task:
        raise errors.InvalidRequest(
            f"Model {model!r} does not support {what}.", param="model", code="wrong_model_type"
        )
    return served


def _usage(request: Request, principal: Principal, served: ServedModel) -> RequestUsage:
    return RequestUsage(request.app.state.platform, principal, served, request.state.request_id)


def _json(payload: dict[str, Any], headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


def _sse(events: Any, headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers}
    )


@router.post("/chat/completions", name="chat.completions.create", openapi_extra=OPENAI_ROUTE)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, principal: PrincipalDep
) -> Response:
    served = _served(request, principal, body.model, TEXT_GENERATION, "chat completions")
    gen = completions.chat_generation(served.runtime, body, request.state.request_id)
    usage = _usage(request, principal, served)
    headers = await usage.admit(len(gen.prompt_ids), completions.worst_output_tokens(gen))
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(completions.stream_events(gen, chat=True, include_usage=include, usage_=usage), headers)
    return _json(completions.chat_response(gen, await completions.run(gen, usage)), headers)


@router.post("/completions", name="completions.create", openapi_extra=OPENAI_ROUTE)
async def text_completions(body: CompletionRequest, request: Request, principal: PrincipalDep) -> Response:
    served = _served(request, principal, body.model, TEXT_GENERATION, "completions")
    gen = completions.text_generation(served.runtime, body, request.state.request_id)
    usage = _usage(request, principal, served)
    headers = await usage.admit(len(gen.prompt_ids), completions.worst_output_tokens(gen))
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(completions.stream_events(gen, chat=False, include_usage=include, usage_=usage), headers)
    result = await completions.run(gen, usage)
    return _json(completions.completion_response(gen, result, body.echo), headers)


@router.post("/embeddings", name="embeddings.create", openapi_extra=OPENAI_ROUTE)
async def embeddings(body: EmbeddingRequest, request: Request, principal: PrincipalDep) -> Response:
    served = _served(request, principal, body.model, SENTENCE_EMBEDDING, "embeddings")
    runtime = served.runtime
    texts = body.texts()
    if not texts or len(texts) > runtime.max_inputs or any(not t for t in texts):
        raise errors.InvalidRequest(
            f"input must be 1 to {runtime.max_inputs} non-empty strings.", param="input", code="invalid_value"
        )
    if body.dimensions is not None and body.dimensions != runtime.encoder.dimensions:
        raise errors.InvalidRequest(
            f"This model gives {runtime.encoder.dimensions} dimensions only.", param="dimensions"
        )
    usage = _usage(request, principal, served)
    headers = await usage.admit(sum(runtime.encoder.count_tokens(texts)), 0)
    try:
        result = await runtime.embed(texts)
    except BaseException:
        usage.abandon()
        raise
    usage.record(sum(result.token_counts), 0)
    await usage.durable()
    vectors = result.vectors.numpy().astype(np.float32)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(vector, body.encoding_format)}
        for i, vector in enumerate(vectors)
    ]
    tokens = sum(result.token_counts)
    summary = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _json({"object": "list", "data": data, "model": body.model, "usage": summary}, headers)


def _encode(vector: np.ndarray, encoding: str) -> Any:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
