"""The console's session store on each database: the cookie's secret is stored only as its HMAC,
sessions end when idle, at their absolute limit, or with their key, and sign-in cleans up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from openmaas.bootstrap import Platform
from openmaas.console import sessions
from openmaas.schemas.tenancy import ApiKeyCreate, OrganizationCreate
from openmaas.tenancy import service as tenancy
from openmaas.tenancy.auth import Principal
from openmaas.tenancy.tables import ConsoleSession
from tests.support.clock import FakeClock
from tests.support.platforms import make_platform

LIFETIMES = sessions.Lifetimes(idle=timedelta(minutes=30), absolute=timedelta(hours=2))


@pytest.fixture
def clocked(tmp_path: Path, database_url: str) -> Iterator[tuple[Platform, FakeClock]]:
    clock = FakeClock()
    platform = make_platform(tmp_path / "home", database_url, clock=clock)
    yield platform, clock
    platform.close()


def _principal(platform: Platform) -> Principal:
    with platform.db.session() as session:
        org = tenancy.create_organization(session, OrganizationCreate(name="acme"), platform.clock.now())
        key = tenancy.create_api_key(
            session,
            platform.hasher,
            org_id=org.id,
            body=ApiKeyCreate(name="k", scopes=["admin"]),
            creator_key_id=None,
            creator_scopes=frozenset({"operator"}),
            now=platform.clock.now(),
        )
    return Principal(key.id, org.id, frozenset(key.scopes), None)


def test_sessions_expire_when_idle_at_their_limit_and_with_their_key(
    clocked: tuple[Platform, FakeClock],
) -> None:
    platform, clock = clocked
    principal = _principal(platform)

    def start() -> str:
        with platform.db.session() as session:
            return sessions.start(session, platform.hasher, principal, clock.now(), LIFETIMES)[0]

    def resume(secret: str) -> sessions.SignedIn:
        return sessions.resume(platform.db, platform.hasher, secret, clock.now(), LIFETIMES)

    secret = start()
    with platform.db.read_session() as session:
        stored = session.scalars(select(ConsoleSession.id)).all()
    assert stored == [platform.hasher.digest(secret)] and secret not in stored  # hashed at rest
    assert resume(secret).principal.key_id == principal.key_id

    # Used every 20 minutes, it lives on past its first idle deadline, up to its absolute limit.
    for _ in range(5):
        clock.advance(20 * 60)
        assert resume(secret).principal.org_id == principal.org_id
    clock.advance(25 * 60)  # 2h05 after sign-in
    with pytest.raises(sessions.SessionExpired, match="expired"):
        resume(secret)

    idle = start()
    clock.advance(31 * 60)
    with pytest.raises(sessions.SessionExpired, match="expired"):
        resume(idle)
    with pytest.raises(sessions.SessionExpired):
        resume("not-a-session")

    revoked = start()  # and the two expired ones are deleted
    with platform.db.read_session() as session:
        assert session.scalar(select(func.count()).select_from(ConsoleSession)) == 1
    with platform.db.session() as session:
        tenancy.revoke_api_key(session, principal.org_id, principal.key_id, clock.now())
    with pytest.raises(sessions.SessionExpired, match="revoked"):
        resume(revoked)

    with platform.db.session() as session:
        sessions.end(session, platform.hasher, revoked)
    with platform.db.read_session() as session:
        assert session.scalar(select(func.count()).select_from(ConsoleSession)) == 0
