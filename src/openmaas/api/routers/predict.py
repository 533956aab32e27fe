"""Predictions from deployed trained models: `POST /v1/deployments/{name}/predict`.

A hot path, like the OpenAI routes: one dependency (the caller), the body handed as bytes to the
inference use-case (`serving.inference`: parsed with orjson, checked against the model's
signature, metered and queued on the deployment's dynamic batcher) and the answer shaped here.
No database work per request. `PredictFastPath` answers the same requests without FastAPI.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from openmaas.api.deps import PrincipalDep, authenticate
from openmaas.api.inference_requests import disconnect_probe
from openmaas.api.middleware import AUDIT_OFF, Message, Receive, Scope, Send
from openmaas.api.responses import INFERENCE, KEYED, errors
from openmaas.bootstrap import Platform
from openmaas.schemas.serving import PredictionsPublic, PredictRequest
from openmaas.serving.inference import Answer

PREDICT_ROUTE = {
    **AUDIT_OFF,
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    },
}

router = APIRouter(prefix="/v1/deployments", tags=["predictions"], responses=KEYED)


@router.post(
    "/{deployment}/predict",
    name="deployments.predict",
    responses=errors(*INFERENCE),
    response_model=PredictionsPublic,
    openapi_extra=PREDICT_ROUTE,
)
async def predict(deployment: str, request: Request, principal: PrincipalDep) -> Response:
    """The documented route; `PredictFastPath` answers the same requests without FastAPI's routing."""
    platform: Platform = request.app.state.platform
    answer = await platform.inference.predict(
        principal,
        deployment,
        await request.body(),
        request.headers.get("x-request-timeout"),
        request.state.request_id,
        disconnect_probe(request.receive),
    )
    return Response(_predictions(deployment, answer), media_type="application/json", headers=answer.headers)


def _predictions(deployment: str, answer: Answer[list[Any]]) -> bytes:
    served = answer.served
    payload = {
        "object": "predictions",
        "deployment": deployment,
        "model": served.runtime.version,
        "version_id": served.version_id,
        "task": served.runtime.task,
        "predictions": answer.result,
    }
    return orjson.dumps(payload)


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
        answer = await self._platform.inference.predict(
            principal, name, raw, timeout, state["request_id"], disconnect_probe(receive)
        )
        content = _predictions(name, answer)
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            *((k.encode(), v.encode()) for k, v in answer.headers.items()),
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
