"""The console's session store: an API key exchanged once for a server-side session.

The browser holds only a random session secret in an HttpOnly cookie; the database holds its HMAC
(the same keyed hash API keys are stored under) with the key's id, a CSRF token and two deadlines:
idle (moved forward as pages are used, at most once a minute) and absolute. Every page reads the
key's row with the session, so a revoked or expired key ends its sessions at once, and several API
servers share sessions through the database. Expired sessions are deleted at each sign-in.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.db.database import Database
from openmaas.tenancy.auth import Principal
from openmaas.tenancy.keys import KeyHasher
from openmaas.tenancy.tables import ApiKey, ConsoleSession

# How stale the idle deadline may get before a page view writes it forward: a page view is a read.
_TOUCH_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Lifetimes:
    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A signed-in console user: the key's principal and the session's CSRF token."""

    principal: Principal
    csrf_token: str
    key_name: str


def start(
    session: Session, hasher: KeyHasher, principal: Principal, now: datetime, lifetimes: Lifetimes
) -> tuple[str, SignedIn]:
    """A new session for an authenticated key: the cookie's secret (shown to no one else) and the
    session. Deletes the sessions that have expired, everyone's."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.idle_expires_at <= now))
    secret = secrets.token_urlsafe(32)
    expires_at = now + lifetimes.absolute
    row = ConsoleSession(
        id=hasher.digest(secret),
        key_id=principal.key_id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        idle_expires_at=min(now + lifetimes.idle, expires_at),
        expires_at=expires_at,
    )
    session.add(row)
    key = session.get(ApiKey, principal.key_id)
    return secret, SignedIn(principal, row.csrf_token, key.name if key else principal.key_id)


def resume(
    db: Database, hasher: KeyHasher, secret: str | None, now: datetime, lifetimes: Lifetimes
) -> SignedIn:
    """The session of a cookie's secret; `SessionExpired` when there is none, it expired, or its
    key was revoked or expired. A page view is a read: the idle deadline is written forward in a
    short write of its own, at most once a minute per session."""
    if not secret or len(secret) > 100:
        raise SessionExpired("Sign in with an API key to use the console.")
    session_id = hasher.digest(secret)
    with db.read_session() as session:
        found = session.execute(
            select(ConsoleSession, ApiKey)
            .join(ApiKey, ApiKey.id == ConsoleSession.key_id)
            .where(ConsoleSession.id == session_id)
        ).first()
        if found is None:
            raise SessionExpired("Sign in with an API key to use the console.")
        row, key = found
        if row.idle_expires_at <= now or row.expires_at <= now:
            raise SessionExpired("Your session has expired; sign in again.")
        if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
            raise SessionExpired("The API key of this session was revoked or has expired; sign in again.")
        idle_until = min(now + lifetimes.idle, row.expires_at)
        stale = idle_until - row.idle_expires_at >= _TOUCH_RESOLUTION
        signed = SignedIn(
            Principal(key.id, key.org_id, frozenset(key.scopes), key.expires_at), row.csrf_token, key.name
        )
    if stale:
        with db.session() as session:
            session.execute(
                update(ConsoleSession)
                .where(ConsoleSession.id == session_id)
                .values(idle_expires_at=idle_until)
            )
    return signed


def end(session: Session, hasher: KeyHasher, secret: str | None) -> None:
    """Sign out: the session is deleted (nothing happens for an unknown one)."""
    if secret and len(secret) <= 100:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id == hasher.digest(secret)))


def csrf_matches(expected: str, given: object) -> bool:
    return isinstance(given, str) and secrets.compare_digest(expected.encode(), given.encode())


class SessionExpired(errors.AuthenticationFailed):
    """No valid console session: the page sends the browser to sign in."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="console_session_expired")
