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
from openmaas.api.middleware import AUDIT_OFF
from openmaas.bootstrap import Platform
from openmaas.serving.batcher import ReplicaClosed
from openmaas.serving.directory import ServedModel
from openmaas.serving.explain.explainer import ExplainLimits
from openmaas.serving.explain.options import parse_options
from openmaas.serving.explain.schemas import ExplainRequest, ExplanationsPublic
from openmaas.serving.runtimes.predictor import PredictorRuntime
from openmaas.serving.usage import RequestUsage
from openmaas.tenancy import scopes
from openmaas.tenancy.auth import Principal

MAX_TIMEOUT_S = 3600.0
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
        _body(await request.body()),
        request.headers.get("x-request-timeout"),
        request.state.request_id,
        _disconnect_probe(request),
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
    timeout_s = _timeout(timeout_header, body, settings.explain_timeout_s)
    for attempt in (1, 2):
        served = _served(platform, principal, deployment)
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


def _served(platform: Platform, principal: Principal, name: str) -> ServedModel:
    org_id = principal.require_org()
    served = platform.served_models.lookup(org_id, name)
    if served is None:
        raise platform.replicas.missing_model(org_id, name)
    if not isinstance(served.runtime, PredictorRuntime):
        raise errors.InvalidRequest(
            f"Explanations are not available for deployment {name!r}: it serves a "
            f"{served.runtime.task} model.",
            param="deployment",
            code="explanations_unsupported",
        )
    return served


def _body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise errors.InvalidRequest("The body is not valid JSON.", code="invalid_json") from None
    if type(body) is not dict:
        raise errors.ValidationFailed('The body must be an object: {"inputs": [...]}.', param="body")
    if "inputs" not in body:
        raise errors.ValidationFailed("inputs is required.", param="inputs")
    unknown = sorted(set(body) - _BODY_FIELDS)
    if unknown:
        raise errors.ValidationFailed(f"Unknown field {unknown[0]!r}.", param=unknown[0])
    return body


def _timeout(header: str | None, body: dict[str, Any], default: float) -> float:
    value: Any = body.get("timeout", header)
    if value is None:
        return default
    param = "timeout" if "timeout" in body else "X-Request-Timeout"
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if type(value) is bool or not 0 < seconds <= MAX_TIMEOUT_S:
        raise errors.ValidationFailed(
            f"{param} must be a number of seconds in (0, {MAX_TIMEOUT_S:g}].", param=param
        )
    return seconds


def _disconnect_probe(request: Request) -> Callable[[], bool] | None:
    """uvicorn flags a lost connection on its request cycle; other servers get no probe."""
    cycle = getattr(request.receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return None
    return lambda: bool(cycle.disconnected)
