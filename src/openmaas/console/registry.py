"""The model registry: models (a page at a time), one model's versions with their metrics side by
side and its aliases (set, move, remove), and one version's lineage — dataset → training job →
version → the versions optimised from it — with the figures its optimisation measured. The same
service calls and scopes as `/v1/registry`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openmaas.console.web import (
    PREFIX,
    ConsoleRoute,
    platform_of,
    redirect,
    render,
    signed_form,
    signed_in,
    validated,
)
from openmaas.registry import lineage as lineage_service
from openmaas.registry import service as registry
from openmaas.schemas.registry import AliasSet

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

After = Annotated[str | None, Query(max_length=100)]
_MAX_METRIC_COLUMNS = 10


@router.get("/registry", name="console.registry")
def models_page(request: Request, after: After = None) -> Response:
    signed = signed_in(request)
    signed.principal.require("models:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        page = registry.list_models(session, org_id, limit=platform.settings.default_page_limit, after=after)
    return render(request, "models.html", signed, page=page, after=after)


@router.get("/registry/models/{name}", name="console.registry.model")
def model_page(request: Request, name: str, after: After = None, changed: After = None) -> Response:
    signed = signed_in(request)
    signed.principal.require("models:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        model = registry.model_public(session, registry.get_model(session, org_id, name))
        page = registry.list_versions(
            session, org_id, name, limit=platform.settings.default_page_limit, after=after
        )
    names = sorted({k for v in page.data for k, value in v.metrics.items() if _number(value)})
    return render(
        request,
        "model.html",
        signed,
        model=model,
        page=page,
        after=after,
        changed=changed,
        metric_names=names[:_MAX_METRIC_COLUMNS],
        more_metrics=len(names) > _MAX_METRIC_COLUMNS,
        fmt=_fmt,
    )


@router.post("/registry/models/{name}/aliases", name="console.registry.aliases.set")
async def set_alias(request: Request, name: str) -> Response:
    signed, form = await signed_form(request)
    signed.principal.require("models:write")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    alias = str(form.get("alias") or "").strip()
    number = str(form.get("version") or "").strip()
    body = validated(AliasSet, {"version": int(number) if number.isdigit() else number or None})

    def change() -> None:
        with platform.db.session() as session:
            registry.set_alias(session, org_id, name, alias, body.version, platform.clock.now())

    await run_in_threadpool(change)
    return redirect(f"{PREFIX}/registry/models/{name}?changed={alias}")


@router.post("/registry/models/{name}/aliases/{alias}/remove", name="console.registry.aliases.remove")
async def remove_alias(request: Request, name: str, alias: str) -> Response:
    signed, _ = await signed_form(request)
    signed.principal.require("models:write")
    org_id = signed.principal.require_org()
    platform = platform_of(request)

    def change() -> None:
        with platform.db.session() as session:
            registry.remove_alias(session, org_id, name, alias)

    await run_in_threadpool(change)
    return redirect(f"{PREFIX}/registry/models/{name}")


@router.get("/registry/versions/{ref}", name="console.registry.version")
def version_page(request: Request, ref: str) -> Response:
    signed = signed_in(request)
    signed.principal.require("models:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        model, row = registry.resolve(session, org_id, ref)
        version = registry.version_public(session, model, row)
        lineage = lineage_service.lineage_of(session, org_id, row)
        optimisation = lineage_service.optimisation_of(row)
    return render(
        request,
        "model_version.html",
        signed,
        version=version,
        lineage=lineage,
        optimisation=optimisation,
        metrics=[(k, _fmt(v)) for k, v in sorted(version.metrics.items()) if _number(v)],
        fmt=_fmt,
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    """A measured figure as a person reads it: 4 significant digits, blank when absent."""
    if not _number(value):
        return "—" if value is None else str(value)
    return f"{value:.4g}"
