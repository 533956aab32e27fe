"""The model registry: models (a page at a time), one model's versions with their metrics side by
side and its aliases (set, move, remove), and one version's lineage — dataset → training job →
version → the versions optimised from it — with the figures its optimisation measured. The same
service calls and scopes as `/v1/registry`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openmaas import errors
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
    return _model(request, name, after=after, changed=changed)


def _model(
    request: Request,
    name: str,
    *,
    after: str | None = None,
    changed: str | None = None,
    alias_error: errors.OpenMaaSError | None = None,
    typed: dict[str, str] | None = None,
) -> Response:
    """The model's page; a refused alias change is shown by its form, in the API's words."""
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
        status=alias_error.status if alias_error else 200,
        model=model,
        page=page,
        after=after,
        changed=changed,
        alias_error=alias_error,
        typed=typed or {},
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

    def change() -> None:
        body = validated(AliasSet, {"version": int(number) if number.isdigit() else number or None})
        with platform.db.session() as session:
            registry.set_alias(session, org_id, name, alias, body.version, platform.clock.now())

    try:
        await run_in_threadpool(change)
    except errors.OpenMaaSError as exc:
        return await _refused(request, name, exc, {"alias": alias, "version": number})
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

    try:
        await run_in_threadpool(change)
    except errors.OpenMaaSError as exc:
        return await _refused(request, name, exc, {"alias": alias})
    return redirect(f"{PREFIX}/registry/models/{name}")


async def _refused(request: Request, name: str, exc: errors.OpenMaaSError, typed: dict[str, str]) -> Response:
    """A refused alias change: the model's page with the error by the aliases' form (a missing
    model, or a key without the scope, is the error page as elsewhere)."""
    if isinstance(exc, errors.PermissionDenied) or (
        isinstance(exc, errors.NotFound) and exc.param == "model"
    ):
        raise exc
    return await run_in_threadpool(lambda: _model(request, name, alias_error=exc, typed=typed))


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
