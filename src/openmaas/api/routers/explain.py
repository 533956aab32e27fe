"""Feature attributions from deployed trained models: `POST /v1/deployments/{name}/explain`.

Mirrors predict: the caller needs the inference scope, the model comes from the in-memory
directory, the body is parsed by hand so every error names its field, and the request is metered
through the same usage gate (one request, its rows). The work runs on the deployment's own
explanation queue and thread (`serving.explain`), never on its prediction batcher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from openmaas import errors
from openmaas.api.deps import PrincipalDep
from openmaas.api.inference_requests import disconnect_probe, json_body, request_timeout
from openmaas.api.middleware import AUDIT_OFF
from openmaas.bootstrap import Platform
from openmaas.schemas.explain import ExplainRequest, ExplanationsPublic
from openmaas.serving.batcher import ReplicaClosed
from openmaas.serving.directory import ServedModel
from openmaas.serving.explain.explainer import ExplainLimits
from openmaas.serving.explain.options import parse_options
from openmaas.serving.runtimes.predictor import PredictorRuntime
from openmaas.serving.usage import RequestUsage
from openmaas.tenancy import scopes
from openmaas.tenancy.auth import Principal

_BODY_FIELDS = frozenset({"inputs", "target", "steps", "baseline", "timeout"})

router = APIRouter(prefix="/v1/deployments", tags=["predictions"])


@router.post(
    "/{deployment}/explain",
    name="deployments.explain",
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
    payload = await explain_payload(
        request.app.state.platform,
        principal,
        deployment,
        json_body(await request.body(), _BODY_FIELDS),
        request.headers.get("x-request-timeout"),
        request.state.request_id,
        disconnect_probe(request.receive),
    )
    return Response(orjson.dumps(payload), media_type="application/json")


async def explain_payload(
    platform: Platform,
    principal: Principal,
    deployment: str,
    body: dict[str, Any],
    timeout_header: str | None,
    request_id: str,
    gone: Callable[[], bool] | None,
) -> dict[str, Any]:
    """Check, meter and run one explain request; raises OpenMaaSError for a 4xx/5xx."""
    principal.require(scopes.INFERENCE)
    settings = platform.settings
    limits = ExplainLimits(settings.explain_max_queue, settings.explain_max_rows, settings.explain_max_steps)
    timeout_s = request_timeout(timeout_header, body, settings.explain_timeout_s)
    for attempt in (1, 2):
        served = await _served(platform, principal, deployment)
        runtime: PredictorRuntime = served.runtime
        explainer = runtime.explainer(limits)
        rows = explainer.check_rows(runtime.check(body.get("inputs"), None)[0])
        options = parse_options(
            body,
            task=runtime.task,
            labels=runtime.labels,
            check_rows=runtime.check_inputs.check,
            max_steps=limits.max_steps,
        )
        usage = RequestUsage(platform, principal, served, request_id)
        await usage.admit_units({"requests": 1, "rows": len(rows)})
        try:
            explained = await explainer.explain(rows, options, timeout_s=timeout_s, gone=gone)
        except ReplicaClosed:
            usage.abandon()
            if attempt == 2:
                raise
            continue  # the deployment moved to a new version while we queued: ask the new one
        except BaseException:
            usage.abandon()
            raise
        usage.record_units({"requests": 1, "rows": len(rows)})
        await usage.durable()
        return {
            "object": "explanations",
            "deployment": deployment,
            "model": runtime.version,
            "version_id": served.version_id,
            "task": runtime.task,
            "method": "integrated_gradients",
            "steps": options.steps,
            "explanations": explained,
        }
    raise AssertionError("unreachable")


async def _served(platform: Platform, principal: Principal, name: str) -> ServedModel:
    """As predict's: the version that answers (by weight for a split), loaded first if idle."""
    served = await platform.replicas.acquire(principal.require_org(), name)
    if not isinstance(served.runtime, PredictorRuntime):
        raise errors.InvalidRequest(
            f"Explanations are not available for deployment {name!r}: it serves a "
            f"{served.runtime.task} model.",
            param="deployment",
            code="explanations_unsupported",
        )
    return served
