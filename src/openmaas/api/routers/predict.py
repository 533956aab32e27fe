"""Predictions from deployed trained models: `POST /v1/deployments/{name}/predict`.

A hot path, like the OpenAI routes: one dependency (the caller), the model looked up in the
in-memory directory, the body parsed with orjson and checked against the model's signature, the
request metered (requests + rows) and its rows queued on the deployment's dynamic batcher. No
database work per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from openmaas import errors
from openmaas.api.deps import PrincipalDep, authenticate
from openmaas.api.inference_requests import disconnect_probe, json_body, request_timeout
from openmaas.api.middleware import AUDIT_OFF, Message, Receive, Scope, Send
from openmaas.bootstrap import Platform
from openmaas.schemas.serving import PredictionsPublic, PredictRequest
from openmaas.serving.batcher import ReplicaClosed
from openmaas.serving.directory import ServedModel
from openmaas.serving.runtimes.predictor import PredictorRuntime
from openmaas.serving.usage import RequestUsage
from openmaas.tenancy import scopes
from openmaas.tenancy.auth import Principal

_BODY_FIELDS = frozenset({"inputs", "top_k", "timeout"})

PREDICT_ROUTE = {
    **AUDIT_OFF,
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    },
}

router = APIRouter(prefix="/v1/deployments", tags=["predictions"])


@router.post(
    "/{deployment}/predict",
    name="deployments.predict",
    response_model=PredictionsPublic,
    openapi_extra=PREDICT_ROUTE,
)
async def predict(deployment: str, request: Request, principal: PrincipalDep) -> Response:
    """The documented route; `PredictFastPath` answers the same requests without FastAPI's routing."""
    content, headers = await predict_response(
        request.app.state.platform,
        principal,
        deployment,
        await request.body(),
        request.headers.get("x-request-timeout"),
        request.state.request_id,
        disconnect_probe(request.receive),
    )
    return Response(content, media_type="application/json", headers=headers)


async def predict_response(
    platform: Platform,
    principal: Principal,
    deployment: str,
    raw_body: bytes,
    timeout_header: str | None,
    request_id: str,
    gone: Callable[[], bool] | None,
) -> tuple[bytes, dict[str, str]]:
    """The JSON body and extra headers of a prediction; raises OpenMaaSError for a 4xx/5xx."""
    principal.require(scopes.INFERENCE)
    body = json_body(raw_body, _BODY_FIELDS)
    timeout_s = request_timeout(timeout_header, body, platform.settings.predict_timeout_s)
    org_id = principal.require_org()
    for attempt in (1, 2):
        # The common case, loaded and admitted from memory, awaits nothing until the batch.
        loaded = platform.replicas.acquire_loaded(org_id, deployment)
        served = _predictor(loaded, deployment) if loaded else await _served(platform, principal, deployment)
        runtime: PredictorRuntime = served.runtime
        rows, top_k = runtime.check(body.get("inputs"), body.get("top_k"))
        usage = RequestUsage(platform, principal, served, request_id)
        worst = {"requests": 1, "rows": len(rows)}
        headers = usage.admit_from_memory(worst)
        if headers is None:
            headers = await usage.admit_units(worst)
        try:
            predictions = await runtime.predict(rows, top_k, timeout_s=timeout_s, gone=gone)
        except ReplicaClosed:
            usage.abandon()
            if attempt == 2:
                raise
            continue  # swapped for a new version while we queued: ask the new one
        except BaseException:
            usage.abandon()
            raise
        usage.record_units({"requests": 1, "rows": len(rows)})
        await usage.durable()
        payload = {
            "object": "predictions",
            "deployment": deployment,
            "model": runtime.version,
            "version_id": served.version_id,
            "task": runtime.task,
            "predictions": predictions,
        }
        return orjson.dumps(payload), headers
    raise AssertionError("unreachable")


class PredictFastPath:
    """`POST /v1/deployments/{name}/predict` as a bare ASGI handler, tried by the gateway before
    the FastAPI app: the same checks, errors and response as the route above, without the router
    walk, dependency solving and Request/Response objects that cost more than the prediction.

    Calling it returns False (and does nothing) for any other request."""

    def __init__(self, platform: Platform, route: Any) -> None:
        self._platform = platform
        self._route = route  # the documented route: the gateway labels metrics and audits by it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        path: str = scope["path"]
        if scope["method"] != "POST" or not path.startswith(_PREFIX) or not path.endswith(_SUFFIX):
            return False
        name = path[len(_PREFIX) : -len(_SUFFIX)]
        if not name or "/" in name:
            return False
        scope["route"] = self._route
        authorization = timeout = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"x-request-timeout":
                timeout = value.decode("latin-1")
        state = scope["state"]
        principal = self._platform.authenticator.cached(authorization) or await authenticate(
            self._platform.authenticator, authorization
        )
        state["principal"] = principal
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            raw: bytes | None = message.get("body", b"")  # the usual case: the whole body at once
        else:
            raw = await _read_body(receive, message)
        if raw is None:
            return True  # the client left before sending its body: nobody to answer
        content, headers = await predict_response(
            self._platform, principal, name, raw, timeout, state["request_id"], disconnect_probe(receive)
        )
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            *((k.encode(), v.encode()) for k, v in headers.items()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": content})
        return True


_PREFIX, _SUFFIX = "/v1/deployments/", "/predict"


async def _read_body(receive: Receive, message: Message) -> bytes | None:
    """The body whose first message is `message`; None if the client left before sending it."""
    chunks: list[bytes] = []
    while True:
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


async def _served(platform: Platform, principal: Principal, name: str) -> ServedModel:
    """The version that answers (drawn by weight for a traffic split); a deployment unloaded
    while idle loads first (a dict lookup when it is loaded)."""
    return _predictor(await platform.replicas.acquire(principal.require_org(), name), name)


def _predictor(served: ServedModel, name: str) -> ServedModel:
    if not isinstance(served.runtime, PredictorRuntime):
        raise errors.InvalidRequest(
            f"Deployment {name!r} serves a {served.runtime.task} model; call it through its "
            "OpenAI-style route instead.",
            param="deployment",
            code="wrong_model_type",
        )
    return served
