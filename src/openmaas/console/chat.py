"""The playground's chat for LLM deployments: the page posts the conversation as JSON (with the
session's CSRF token in a header; optionally a JSON schema for structured output and a tool
definition) and reads the answer as it streams — text or tool calls —, in OpenAI's
chat-completion chunks — the inference use-case `/v1/chat/completions` calls, as the session's key.

Errors answer in the API's JSON shape, which the page shows in the API's words."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from openmaas import errors
from openmaas.console import sessions
from openmaas.console.web import PREFIX, ConsoleRoute, platform_of, signed_in, validated
from openmaas.serving.openai_types import ChatCompletionRequest

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

_MAX_TOKENS = 256  # a playground answer; the API takes longer ones
# What the page may set: the conversation, its length and temperature, and the structured output
# (`response_format`) and tools (`tools`, `tool_choice`) the API takes, checked as the API checks them.
_ALLOWED = ("messages", "max_tokens", "temperature", "response_format", "tools", "tool_choice")


@router.post("/deployments/{name}/chat", name="console.deployments.chat", openapi_extra={"x-audit": False})
async def chat(request: Request, name: str) -> Response:
    try:
        signed = await run_in_threadpool(signed_in, request)
        if not sessions.csrf_matches(signed.csrf_token, request.headers.get("x-csrf-token")):
            raise errors.PermissionDenied(
                "The page's security token is missing or stale; reload the page.", code="csrf_failed"
            )
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise errors.UnsupportedMediaType("Send the conversation as JSON.", param="Content-Type")
        body = validated(ChatCompletionRequest, _fields(await request.body(), name))
        platform = platform_of(request)
        frames = await platform.inference.stream(signed.principal, body, request.state.request_id)
    except errors.OpenMaaSError as exc:
        return Response(orjson.dumps(exc.to_dict()), status_code=exc.status, media_type="application/json")
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", **frames.headers}
    return StreamingResponse(frames.result, media_type="text/event-stream", headers=headers)


def _fields(raw: bytes, name: str) -> dict[str, Any]:
    try:
        given = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise errors.InvalidRequest("The conversation is not valid JSON.", code="invalid_json") from None
    if not isinstance(given, dict):
        raise errors.InvalidRequest("Send an object with the conversation's messages.", param="messages")
    fields = {key: given[key] for key in _ALLOWED if key in given}
    fields.setdefault("max_tokens", _MAX_TOKENS)
    return {**fields, "model": name, "stream": True}
