"""Throwaway PostgreSQL databases for tests (one per test, dropped afterwards), and a database made
unreachable for a while."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from openmaas.db.database import Database

POSTGRES_URL = os.environ.get("OPENMAAS_TEST_POSTGRES_URL")
# The databases a run covers: SQLite always, PostgreSQL when OPENMAAS_TEST_POSTGRES_URL is set.
DATABASE_KINDS = ["sqlite", *(["postgresql"] if POSTGRES_URL else [])]


@contextmanager
def fresh_postgres_database(server_url: str, template: str | None = None) -> Iterator[str]:
    """A new database on the server of `server_url`, empty or a copy of the database `template`."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            copy = f' TEMPLATE "{template}"' if template else ""
            connection.execute(text(f'CREATE DATABASE "{name}"{copy}'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def unreachable(db: Database) -> Iterator[None]:
    """Within the block, `db` cannot be connected to, as when its server is down: every new
    connection fails with the driver's own OperationalError, and idle pooled ones are dropped.
    (Connections held open, such as the ledger writer's, keep working.)"""

    def refuse(*_args: object) -> None:
        if db.is_sqlite:
            raise sqlite3.OperationalError("unable to open database file (test: database unreachable)")
        raise psycopg.OperationalError("connection refused (test: database unreachable)")

    event.listen(db.engine, "do_connect", refuse)
    db.engine.dispose()
    try:
        yield
    finally:
        event.remove(db.engine, "do_connect", refuse)
