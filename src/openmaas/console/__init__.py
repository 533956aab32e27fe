"""The web console, served by the API server at `/console` (and `/` sends browsers there):
server-rendered pages (Jinja2) over small vendored static files; no build step, nothing fetched at
run time. Pages call the services the API routers call, with the same scopes and tenant isolation.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from openmaas.console import deployments, jobs, keys, organizations, overview, signin, usage
from openmaas.console.web import PREFIX


def mount(app: FastAPI) -> None:
    for module in (signin, overview, keys, usage, jobs, deployments, organizations):
        app.include_router(module.router)
    app.mount(
        f"{PREFIX}/static", StaticFiles(directory=Path(__file__).parent / "static"), name="console.static"
    )

    @app.get("/", include_in_schema=False, name="console.root")
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)
