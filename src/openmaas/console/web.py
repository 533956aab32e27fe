"""What every console page shares: its route class (errors drawn in the page, a lapsed session
sent to sign in), the signed-in caller, CSRF checks, the templates and the response headers.

Pages call the same service functions as the API routers, with the same scope checks
(`Principal.require`), so what a session sees follows its key exactly as the API does.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from openmaas import errors
from openmaas.bootstrap import Platform
from openmaas.console import sessions
from openmaas.console.sessions import SignedIn
from openmaas.tenancy import scopes as scope_rules

COOKIE = "om_console"
PREFIX = "/console"
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
# OpenAI's shapes (files, fine-tuning jobs) date things in Unix seconds.
_TEMPLATES.filters["unix_time"] = lambda seconds: (
    datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC") if seconds else "—"
)
# Scripts and styles come from our own static folder only; no page may be framed.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# (label, path, scope needed): a page whose scope the key lacks is not in its navigation.
NAVIGATION = (
    ("Overview", f"{PREFIX}/", "usage:read"),
    ("API keys", f"{PREFIX}/keys", "api_keys:read"),
    ("Usage", f"{PREFIX}/usage", "usage:read"),
    ("Datasets", f"{PREFIX}/datasets", "datasets:read"),
    ("Files", f"{PREFIX}/files", "datasets:read"),
    ("Jobs", f"{PREFIX}/jobs", "jobs:read"),
    ("Fine-tuning", f"{PREFIX}/fine-tuning", "jobs:read"),
    ("Registry", f"{PREFIX}/registry", "models:read"),
    ("Deployments", f"{PREFIX}/deployments", "deployments:read"),
    ("Invoices", f"{PREFIX}/invoices", "billing:read"),
    ("Marketplace", f"{PREFIX}/marketplace", "models:read"),
    ("Organisations", f"{PREFIX}/organizations", scope_rules.OPERATOR),
    ("Pricebooks", f"{PREFIX}/pricebooks", scope_rules.OPERATOR),
    ("Platform usage", f"{PREFIX}/platform", scope_rules.OPERATOR),
    ("Audit log", f"{PREFIX}/audit", "audit:read"),
)


class ConsoleRoute(APIRoute):
    """A console route: a lapsed session redirects to sign-in; any other error is shown in the
    page, in the API's words, with the API's status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except sessions.SessionExpired as exc:
                target = f"{PREFIX}/sign-in?next={quote(request.url.path)}"
                if request.cookies.get(COOKIE):  # a session ended: say why (a first visit needs no reason)
                    target += f"&reason={quote(exc.message)}"
                response: Response = RedirectResponse(target, status_code=303)
                response.delete_cookie(COOKIE, path=PREFIX)
                return response
            except errors.OpenMaaSError as exc:
                signed = getattr(request.state, "console", None)
                return render(request, "error.html", signed, status=exc.status, error=exc)

        return handle


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def lifetimes(platform: Platform) -> sessions.Lifetimes:
    settings = platform.settings
    return sessions.Lifetimes(
        idle=timedelta(seconds=settings.console_session_idle_s),
        absolute=timedelta(seconds=settings.console_session_max_s),
    )


def signed_in(request: Request) -> SignedIn:
    """The caller of a page (blocking: one read, and a short write at most once a minute); raises
    `SessionExpired` when there is none. Mutations are audited under its key, as in the API."""
    platform = platform_of(request)
    secret, now = request.cookies.get(COOKIE), platform.clock.now()
    signed = sessions.resume(platform.db, platform.hasher, secret, now, lifetimes(platform))
    request.state.console = signed
    request.state.principal = signed.principal
    return signed


async def signed_form(request: Request) -> tuple[SignedIn, FormData]:
    """A posted form and its sender, the form carrying the session's CSRF token (else refused)."""
    form = await request.form()
    signed = await run_in_threadpool(signed_in, request)
    check_csrf(signed, form)
    return signed, form


def check_csrf(signed: SignedIn, form: FormData) -> None:
    if not sessions.csrf_matches(signed.csrf_token, form.get("csrf_token")):
        raise errors.PermissionDenied(
            "The form's security token is missing or stale; reload the page and try again.",
            code="csrf_failed",
            param="csrf_token",
        )


def can(signed: SignedIn | None, scope: str) -> bool:
    """Does the session's key hold `scope`? (The audit log is also the operator's.)"""
    if signed is None:
        return False
    held = signed.principal.scopes
    return scope_rules.grants(held, scope) or (scope == "audit:read" and scope_rules.OPERATOR in held)


def render(
    request: Request, template: str, signed: SignedIn | None, *, status: int = 200, **context: Any
) -> HTMLResponse:
    navigation = [(label, path) for label, path, scope in NAVIGATION if can(signed, scope)]
    html = _TEMPLATES.get_template(template).render(
        request=request,
        signed=signed,
        navigation=navigation,
        current=request.url.path,
        can=lambda scope: can(signed, scope),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def redirect(path: str, headers: Mapping[str, str] | None = None) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers=dict(headers or {}))


def secure(request: Request) -> bool:
    """Behind HTTPS (directly, or through a proxy uvicorn trusts) the cookie is `Secure`."""
    return request.url.scheme == "https"


def parse_day(text: str | None, param: str) -> datetime | None:
    """A `YYYY-MM-DD` form field as midnight UTC, or None when empty."""
    if not text:
        return None
    try:
        day = datetime.fromisoformat(text)
    except ValueError:
        raise errors.ValidationFailed(f"{param}: expected a date such as 2026-12-31.", param=param) from None
    return day if day.tzinfo is not None else day.replace(tzinfo=UTC)


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], data: Mapping[str, Any]) -> Model:
    """A form's fields as the API's request schema, refused as the API refuses a body: 422
    naming the first field at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first.get("loc", ())) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        raise errors.ValidationFailed(message, param=param) from None
