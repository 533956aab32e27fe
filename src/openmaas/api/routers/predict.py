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
from openmaas.api.deps import PrincipalDep
from openmaas.api.middleware import AUDIT_OFF
from openmaas.bootstrap import Platform
from openmaas.serving.batcher import ReplicaClosed
from openmaas.serving.directory import ServedModel
from openmaas.serving.runtimes.predictor import PredictorRuntime
from openmaas.serving.schemas import PredictionsPublic, PredictRequest
from openmaas.serving.usage import RequestUsage
from openmaas.tenancy import scopes
from openmaas.tenancy.auth import Principal

MAX_TIMEOUT_S = 3600.0
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
    principal.require(scopes.INFERENCE)
    platform: Platform = request.app.state.platform
    body = _body(await request.body())
    timeout_s = _timeout(request, body, platform.settings.predict_timeout_s)
    gone = _disconnect_probe(request)
    for attempt in (1, 2):
        served = _served(platform, principal, deployment)
        runtime: PredictorRuntime = served.runtime
        rows, top_k = runtime.check(body.get("inputs"), body.get("top_k"))
        usage = RequestUsage(platform, principal, served, request.state.request_id)
        headers = await usage.admit_units({"requests": 1, "rows": len(rows)})
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
        return Response(orjson.dumps(payload), media_type="application/json", headers=headers)
    raise AssertionError("unreachable")


def _served(platform: Platform, principal: Principal, name: str) -> ServedModel:
    org_id = principal.require_org()
    served = platform.served_models.lookup(org_id, name)
    if served is None:
        raise platform.replicas.missing_model(org_id, name)
    if not isinstance(served.runtime, PredictorRuntime):
        raise errors.InvalidRequest(
            f"Deployment {name!r} serves a {served.runtime.task} model; call it through its "
            "OpenAI-style route instead.",
            param="deployment",
            code="wrong_model_type",
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
    if len(body) > 1 and not body.keys() <= _BODY_FIELDS:
        unknown = sorted(set(body) - _BODY_FIELDS)[0]
        raise errors.ValidationFailed(f"Unknown field {unknown!r}.", param=unknown)
    return body


def _timeout(request: Request, body: dict[str, Any], default: float) -> float:
    header = request.headers.get("x-request-timeout")
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
    """A cheap check that the client went away, read by the batcher before it runs the job.

    uvicorn's request cycle (our server) flags a lost connection on itself; other servers get no
    probe, and their abandoned jobs simply run."""
    cycle = getattr(request.receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return None
    return lambda: bool(cycle.disconnected)
