"""Building a migrated platform (with its operator key) for a test.

Migrating an empty database runs every migration (a second on PostgreSQL, most of a platform's
start-up): a test's database is instead a copy of a template migrated once per test run — SQLite's
file copied, PostgreSQL's database created from it (`CREATE DATABASE … TEMPLATE`), by the
`database_url` fixture or, for an empty database given to it, by `make_platform`. The migrations
still run on it (none is left to apply); tests of the migrations themselves start from empty
databases (the `empty_database_url` fixture)."""

from __future__ import annotations

import atexit
import secrets
import shutil
import tempfile
import uuid
from contextlib import AbstractContextManager
from functools import cache
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from openmaas.bootstrap import Platform, build_platform, ensure_admin_key
from openmaas.clock import Clock
from openmaas.config import Settings
from openmaas.db import migrate
from openmaas.db.database import Database
from tests.support import databases


def migrated_postgres_database(server_url: str) -> AbstractContextManager[str]:
    """A new database on the server of `server_url`, a copy of the run's migrated template."""
    maintenance = make_url(server_url).set(database="postgres").render_as_string(hide_password=False)
    return databases.fresh_postgres_database(server_url, postgres_template(maintenance))


def make_platform(home: Path, database_url: str, clock: Clock | None = None, **overrides: object) -> Platform:
    _fill_from_template(database_url)
    settings = Settings(
        home=home,
        database_url=database_url,
        secret_key=secrets.token_hex(32),
        config_dir=home / "config",
        freeze_heap=False,  # a full collection at each server start: 0.3 s a test
        **overrides,  # type: ignore[arg-type]
    )
    platform = build_platform(settings, clock=clock)
    migrate.upgrade(platform.db)
    ensure_admin_key(platform)
    return platform


# A server's own databases, which a test may use (a throwaway cluster's `postgres`): never recreated.
_MAINTENANCE = {"postgres", "template0", "template1"}


def _fill_from_template(database_url: str) -> None:
    """An empty database becomes a copy of the migrated template; one in use is left as it is."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        if url.database and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sqlite_template(), path)
        return
    if url.get_backend_name() != "postgresql" or url.database in _MAINTENANCE or not _empty(database_url):
        return
    # The server's maintenance database, to drop and recreate this one from outside it.
    server = url.set(database="postgres").render_as_string(hide_password=False)
    try:
        template = postgres_template(server)
    except DBAPIError:  # no maintenance database, or no right to create one: migrate it instead
        return
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{url.database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{url.database}" TEMPLATE "{template}"'))
    finally:
        admin.dispose()


def _empty(database_url: str) -> bool:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            query = (
                "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            )
            return connection.execute(text(query)).scalar() == 0
    finally:
        engine.dispose()


@cache
def sqlite_template() -> Path:
    """A migrated SQLite database file, removed when the run ends."""
    folder = Path(tempfile.mkdtemp(prefix="openmaas-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "migrated.db"
    db = Database(f"sqlite:///{path}")
    try:
        migrate.upgrade(db)
        with db.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # all of it in the one file
    finally:
        db.dispose()
    return path


@cache
def postgres_template(server: str) -> str:
    """A migrated database on the server whose maintenance database is `server`, dropped when the
    run ends."""
    name = f"t_template_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    db = Database(make_url(server).set(database=name).render_as_string(hide_password=False))
    try:
        migrate.upgrade(db)
    finally:
        db.dispose()

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    atexit.register(drop)
    return name
