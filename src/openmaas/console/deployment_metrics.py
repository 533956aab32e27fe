"""A deployment's load over the last hour, for the charts on its page: queue depth and latency
from the server's in-memory series (`serving.metrics_series`), embedded in the page and polled
from `metrics.json` every sample interval. Nothing here touches the request path or writes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from openmaas.console.web import PREFIX, ConsoleRoute, platform_of, signed_in
from openmaas.serving import service
from openmaas.serving.metrics_series import LLM, Series

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


@router.get("/deployments/{name}/metrics.json", name="console.deployment_metrics")
def metrics_json(request: Request, name: str) -> Response:
    """The deployment's series (the session's cookie, not a key); another org's name is 404."""
    signed = signed_in(request)
    signed.principal.require("deployments:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        service.get(session, org_id, name)
    body = orjson.dumps(charts(platform.deployment_metrics.series(org_id, name)))
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


def charts(series: Series) -> dict[str, Any]:
    """The two charts' columns: x in Unix seconds; queue depth and in-flight requests; latency
    quantiles in milliseconds (labelled by what they measure for this kind of model)."""
    if series.kind == LLM:
        latency = [
            {"label": "time to first token p50", "values": series.p50_ms},
            {"label": "time to first token p95", "values": series.p95_ms},
        ]
    else:
        latency = [
            {"label": "batch run p50", "values": series.p50_ms},
            {"label": "batch run p95", "values": series.p95_ms},
            {"label": "queue wait p95", "values": series.wait_p95_ms},
        ]
    return {
        "interval_s": series.interval_s,
        "x": series.at,
        "depth": {
            "unit": "requests",
            "series": [
                {"label": "queued", "values": series.queued},
                {"label": "in flight", "values": series.in_flight},
            ],
        },
        "latency": {"unit": "ms", "series": latency},
        "requests": series.requests,
    }
