"""Signing in with an API key (exchanged once for a session cookie) and signing out.

The sign-in form is protected from cross-site posts by a double-submit token: a random value in
a SameSite=Strict cookie that the form must repeat. The key itself is read once and never stored
in the browser: the session cookie holds only a random secret.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openmaas.console import sessions
from openmaas.console.web import (
    COOKIE,
    PREFIX,
    ConsoleRoute,
    check_csrf,
    lifetimes,
    platform_of,
    redirect,
    render,
    secure,
)
from openmaas.errors import AuthenticationFailed
from openmaas.tenancy import scopes as scope_rules

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

_SIGNIN_COOKIE = "om_console_signin"


@router.get("/sign-in", name="console.sign_in_form")
def sign_in_form(
    request: Request,
    next: Annotated[str, Query(max_length=500)] = f"{PREFIX}/",
    reason: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request, "sign_in.html", None, csrf_token=token, next=_local(next), notice=reason, error=None
    )
    response.set_cookie(
        _SIGNIN_COOKIE, token, path=PREFIX, httponly=True, samesite="strict", secure=secure(request)
    )
    return response


@router.post("/sign-in", name="console.sign_in")
async def sign_in(request: Request) -> Response:
    form = await request.form()
    target = _local(str(form.get("next") or f"{PREFIX}/"))
    token = request.cookies.get(_SIGNIN_COOKIE) or ""
    if not token or not sessions.csrf_matches(token, form.get("csrf_token")):
        return _refused(request, "The sign-in form expired; please try again.", target)
    key = str(form.get("api_key") or "").strip()
    platform = platform_of(request)
    try:
        principal = await run_in_threadpool(platform.authenticator.authenticate, f"Bearer {key}")
    except AuthenticationFailed as exc:
        return _refused(request, exc.message, target, status=401)

    def start() -> tuple[str, sessions.SignedIn]:
        with platform.db.session() as session:
            return sessions.start(
                session, platform.hasher, principal, platform.clock.now(), lifetimes(platform)
            )

    secret, signed = await run_in_threadpool(start)
    request.state.principal = signed.principal  # audited as the key's sign-in
    if scope_rules.OPERATOR in principal.scopes and target == f"{PREFIX}/":
        target = f"{PREFIX}/organizations"
    response = redirect(target)
    response.set_cookie(
        COOKIE,
        secret,
        path=PREFIX,
        max_age=int(platform.settings.console_session_max_s),
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )
    response.delete_cookie(_SIGNIN_COOKIE, path=PREFIX)
    return response


@router.post("/sign-out", name="console.sign_out")
async def sign_out(request: Request) -> Response:
    platform = platform_of(request)
    form = await request.form()

    def end() -> None:
        secret, now = request.cookies.get(COOKIE), platform.clock.now()
        signed = sessions.resume(platform.db, platform.hasher, secret, now, lifetimes(platform))
        request.state.console = signed
        check_csrf(signed, form)  # a cross-site post cannot sign anyone out
        request.state.principal = signed.principal
        with platform.db.session() as session:
            sessions.end(session, platform.hasher, secret)

    await run_in_threadpool(end)
    response = redirect(f"{PREFIX}/sign-in?reason=You+have+signed+out.")
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


def _refused(request: Request, message: str, target: str, status: int = 400) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "sign_in.html",
        None,
        status=status,
        csrf_token=token,
        next=target,
        error=message,
        notice=None,
    )
    response.set_cookie(
        _SIGNIN_COOKIE, token, path=PREFIX, httponly=True, samesite="strict", secure=secure(request)
    )
    return response


def _local(path: str) -> str:
    """Where to go after signing in: a console page, never another site (`//evil.example`)."""
    return (
        path
        if path.startswith(f"{PREFIX}/") and not path.startswith("//") and "\\" not in path
        else f"{PREFIX}/"
    )
