"""Throwaway PostgreSQL databases for tests: one per test, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get("OPENMAAS_TEST_POSTGRES_URL")
# The databases a run covers: SQLite always, PostgreSQL when OPENMAAS_TEST_POSTGRES_URL is set.
DATABASE_KINDS = ["sqlite", *(["postgresql"] if POSTGRES_URL else [])]


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
