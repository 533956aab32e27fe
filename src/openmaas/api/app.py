"""The FastAPI app factory: one app per `Platform`, no globals."""

from __future__ import annotations

import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from openmaas import __version__, console
from openmaas.api import errors as api_errors
from openmaas.api.middleware import ASGIApp, GatewayMiddleware, Metrics, Receive, Scope, Send
from openmaas.api.platform_metrics import PlatformCollector
from openmaas.api.request_log import RequestLog
from openmaas.api.routers import (
    admin,
    batches,
    billing,
    datasets,
    deployments,
    explain,
    files,
    fine_tuning,
    health,
    imports,
    jobs,
    marketplace,
    openai,
    optimize,
    predict,
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
        platform.replicas.start()
        platform.deployment_sync.start()  # deployments made through other API servers
        platform.billing_scheduler.start()
        platform.batches.start()
        platform.deployment_metrics.start()
        if request_log is not None:
            request_log.start()
        # What is loaded by now (frameworks, models) lives as long as the server: keep the cyclic GC
        # from rescanning it in every full collection, whose pauses were the p99 of hot routes.
        freeze = platform.settings.freeze_heap
        if freeze:
            gc.collect()
            gc.freeze()
        yield
        if freeze:
            gc.unfreeze()
        await platform.batches.close()
        platform.close()
        if request_log is not None:
            request_log.close()

    app = _GatewayApp(
        title="OpenMaaS",
        version=__version__,
        description="Self-hosted model-as-a-service platform.",
        lifespan=lifespan,
    )
    app.state.platform = platform
    metrics = Metrics(platform.clock)
    app.state.metrics = metrics
    request_log = RequestLog(platform.clock) if platform.settings.request_log else None
    app.state.request_log = request_log
    app.state.platform_metrics = PlatformCollector(platform, request_log)
    metrics.registry.register(app.state.platform_metrics)

    def write_audit(entry: audit.AuditRecord) -> None:
        with platform.db.session() as session:
            audit.record(session, entry, platform.clock.now())

    # Routes match in order: the hot, per-request ones first.
    routers = [
        module.router
        for module in (
            predict,
            explain,
            openai,
            tenant,
            admin,
            health,
            datasets,
            files,
            fine_tuning,
            batches,
            jobs,
            training,
            optimize,
            imports,
            registry,
            deployments,
            usage,
            billing,
            marketplace,
        )
    ]
    for router in routers:
        app.include_router(router)
    every_route = [route for router in routers for route in router.routes]
    api_errors.install(app, every_route)
    console.mount(app)  # after the API's routes, outside its OpenAPI document
    # Routes that read their own (large) bodies (the console's dataset upload too); the gateway's
    # body limit leaves them alone.
    streamed = [
        r
        for r in [*every_route, *console.routes()]
        if (getattr(r, "openapi_extra", None) or {}).get("x-streamed-body")
    ]
    app.gateway = GatewayMiddleware(
        functools.partial(FastAPI.__call__, app),
        max_body_bytes=platform.settings.max_body_bytes,
        metrics=metrics,
        audit_sink=write_audit,
        clock=platform.clock,
        routes=streamed,
        all_routes=every_route,
        fast_paths=[predict.PredictFastPath(platform, _route(predict.router, "deployments.predict"))],
        request_log=request_log,
    )
    return app


class _GatewayApp(FastAPI):
    """FastAPI with our gateway in front of everything FastAPI does per request (telemetry, routing,
    its middleware): the gateway's fast paths answer before any of that runs, and every other HTTP
    request goes through it into FastAPI as usual."""

    gateway: ASGIApp | None = None

    def openapi(self) -> dict[str, Any]:
        """The document, saying that every operation takes an API key as a bearer token unless it
        says otherwise (`security: []`: the health routes), declared here rather than as a FastAPI
        security dependency, which would run on every request of the hot routes; and that no path
        or query parameter holds a NUL, which the gateway refuses for all."""
        document = super().openapi()  # made once (FastAPI keeps it), then this adds to it once
        if "security" not in document:
            document.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key, `om-…`"}
            }
            document["security"] = [{"apiKey": []}]
            for operations in document["paths"].values():
                for operation in operations.values():
                    for parameter in operation.get("parameters", []):
                        if parameter["in"] in ("path", "query"):
                            _without_nul(parameter["schema"])
        return document

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.gateway is not None:
            scope["app"] = self
            await self.gateway(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _without_nul(schema: dict[str, Any]) -> None:
    """A string parameter's schema, where it says nothing narrower, refuses NUL."""
    if schema.get("type") == "string" and not schema.keys() & {"pattern", "enum", "format", "const"}:
        schema["pattern"] = "^[^\\x00]*$"
    for branch in schema.get("anyOf", []):
        _without_nul(branch)
    if isinstance(schema.get("items"), dict):
        _without_nul(schema["items"])


def _route(router: APIRouter, name: str) -> APIRoute:
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.name == name)
