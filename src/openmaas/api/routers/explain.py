"""Feature attributions from deployed trained models: `POST /v1/deployments/{name}/explain`.

Mirrors predict: the body goes as bytes to the inference use-case (`serving.inference`), which
parses it so every error names its field, meters the request like a prediction (one request, its
rows) and runs it on the deployment's own explanation queue and thread, never on its prediction
batcher. The answer is shaped here.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from openmaas.api.deps import PrincipalDep
from openmaas.api.inference_requests import disconnect_probe
from openmaas.api.middleware import AUDIT_OFF
from openmaas.api.responses import INFERENCE, KEYED, errors
from openmaas.bootstrap import Platform
from openmaas.schemas.explain import ExplainRequest, ExplanationsPublic

router = APIRouter(prefix="/v1/deployments", tags=["predictions"], responses=KEYED)


@router.post(
    "/{deployment}/explain",
    name="deployments.explain",
    responses=errors(*INFERENCE),
    response_model=ExplanationsPublic,
    openapi_extra={
        **AUDIT_OFF,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ExplainRequest.model_json_schema()}},
        },
    },
)
async def explain(deployment: str, request: Request, principal: PrincipalDep) -> Response:
    platform: Platform = request.app.state.platform
    answer = await platform.inference.explain(
        principal,
        deployment,
        await request.body(),
        request.headers.get("x-request-timeout"),
        request.state.request_id,
        disconnect_probe(request.receive),
    )
    served, explained = answer.served, answer.result
    payload = {
        "object": "explanations",
        "deployment": deployment,
        "model": served.runtime.version,
        "version_id": served.version_id,
        "task": served.runtime.task,
        "method": "integrated_gradients",
        "steps": explained.steps,
        "explanations": explained.explanations,
    }
    return Response(orjson.dumps(payload), media_type="application/json")
