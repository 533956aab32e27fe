"""The web console, served by the API server at `/console` (and `/` sends browsers there):
server-rendered pages (Jinja2) over small vendored static files; no build step, nothing fetched at
run time. Pages call the services the API routers call, with the same scopes and tenant isolation.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute
from starlette.staticfiles import StaticFiles

from openmaas import errors
from openmaas.console import (
    audit,
    chat,
    datasets,
    deployment_metrics,
    deployments,
    files,
    fine_tuning,
    invoices,
    jobs,
    keys,
    marketplace,
    org_billing,
    organizations,
    overview,
    platform,
    pricebooks,
    registry,
    signin,
    usage,
)
from openmaas.console.web import PREFIX, ConsoleRoute


def mount(app: FastAPI) -> None:
    pages = (
        signin,
        overview,
        keys,
        usage,
        datasets,
        files,
        jobs,
        fine_tuning,
        registry,
        deployments,
        deployment_metrics,
        chat,
        invoices,
        marketplace,
    )
    operator_pages = (organizations, org_billing, pricebooks, platform, audit)
    for module in (*pages, *operator_pages):
        app.include_router(module.router)
    app.mount(
        f"{PREFIX}/static", StaticFiles(directory=Path(__file__).parent / "static"), name="console.static"
    )
    app.include_router(_fallback)  # after the static files, which it would otherwise shadow

    @app.get("/", include_in_schema=False, name="console.root")
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)


def routes() -> list[BaseRoute]:
    """The console's own routes (the gateway looks among them for those that read their own bodies)."""
    return [route for module in (datasets, files, registry) for route in module.router.routes]


# Last: any other console address is a page that does not exist, said in a page.
_fallback = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


@_fallback.get("/{rest:path}", name="console.not_found")
def not_found(rest: str) -> None:
    raise errors.NotFound(f"No console page {PREFIX}/{rest}.", param="path")
