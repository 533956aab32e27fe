"""Liveness, readiness and Prometheus metrics. These three need no key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from openmaas import errors
from openmaas.api.deps import PlatformDep
from openmaas.api.responses import errors as error_responses
from openmaas.bootstrap import Platform
from openmaas.db import migrate

router = APIRouter(tags=["health"])
KEYLESS: dict[str, object] = {"security": []}  # `openapi_extra`: these take no API key


@router.get("/healthz", name="healthz", openapi_extra=KEYLESS)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _readiness(platform: Platform) -> dict[str, object]:
    try:  # its own session: any failure, connecting included, is the 503 below
        with platform.db.read_session() as session:
            session.execute(text("SELECT 1"))
        state = migrate.schema_state(platform.db)
    except Exception as exc:
        raise errors.ServiceUnavailable(
            f"Database unreachable: {type(exc).__name__}.", code="database_unavailable", retry_after=5
        ) from exc
    if not state.is_current:
        raise errors.ServiceUnavailable(
            f"Database schema is at {list(state.current)}, expected {list(state.head)}: "
            "run `openmaas db upgrade`.",
            code="migrations_pending",
            retry_after=30,
        )
    return {"status": "ready", "schema_revision": ",".join(state.current)}


@router.get("/readyz", name="readyz", openapi_extra=KEYLESS, responses=error_responses(503))
async def readyz(platform: PlatformDep) -> dict[str, object]:
    return await run_in_threadpool(_readiness, platform)


@router.get(
    "/metrics",
    name="metrics",
    openapi_extra=KEYLESS,
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    await run_in_threadpool(request.app.state.platform_metrics.read_database)  # the job counts
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
