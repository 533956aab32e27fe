"""The FastAPI app factory: one app per `Platform`, no globals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from openmaas import __version__
from openmaas.api import errors as api_errors
from openmaas.api.middleware import GatewayMiddleware, Metrics
from openmaas.api.routers import (
    admin,
    billing,
    datasets,
    health,
    jobs,
    marketplace,
    models,
    registry,
    tenant,
    training,
    usage,
)
from openmaas.bootstrap import Platform
from openmaas.tenancy import audit


def create_app(platform: Platform) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        platform.close()

    app = FastAPI(
        title="OpenMaaS",
        version=__version__,
        description="Self-hosted model-as-a-service platform.",
        lifespan=lifespan,
    )
    app.state.platform = platform
    metrics = Metrics()
    app.state.metrics = metrics

    def write_audit(entry: audit.AuditRecord) -> None:
        with platform.db.session() as session:
            audit.record(session, entry, platform.clock.now())

    api_errors.install(app)
    # Routes match in order: the hot, per-request ones first.
    for module in (models, tenant, admin, health, datasets, jobs, training, registry):
        app.include_router(module.router)
    for module in (usage, billing, marketplace):
        app.include_router(module.router)
    app.add_middleware(
        GatewayMiddleware,
        max_body_bytes=platform.settings.max_body_bytes,
        metrics=metrics,
        audit_sink=write_audit,
        routes=app.router.routes,
    )
    return app
