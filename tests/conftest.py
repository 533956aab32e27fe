"""Shared fixtures: a fresh database per test on SQLite and, when OPENMAAS_TEST_POSTGRES_URL is
set, on PostgreSQL too; a migrated platform; and a real server on a free port."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmaas.api.app import create_app
from openmaas.bootstrap import Platform
from tests.support import databases
from tests.support.databases import DATABASE_KINDS, POSTGRES_URL
from tests.support.platforms import make_platform, migrated_postgres_database, sqlite_template
from tests.support.served import Served
from tests.support.server import running_server


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """A CLI command run in-process (`serve`, `worker`) sends the root logger to the stderr of its
    test, which pytest closes afterwards: each test's handlers and level are put back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(params=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with the newest schema, one per test, on each database this run covers: a copy
    of a template migrated once per run."""
    if request.param == "sqlite":
        path = tmp_path / "openmaas.db"
        shutil.copyfile(sqlite_template(), path)
        yield f"sqlite:///{path}"
        return
    assert POSTGRES_URL is not None
    with migrated_postgres_database(POSTGRES_URL) as url:
        yield url


@pytest.fixture(params=DATABASE_KINDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema), one per test, on each database this run covers."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'openmaas.db'}"
        return
    assert POSTGRES_URL is not None
    with databases.fresh_postgres_database(POSTGRES_URL) as url:
        yield url


@pytest.fixture
def platform(tmp_path: Path, database_url: str) -> Iterator[Platform]:
    platform = make_platform(tmp_path / "home", database_url, max_body_bytes=64 * 1024)
    yield platform
    platform.close()


@pytest.fixture
def served(platform: Platform) -> Iterator[Served]:
    assert platform.new_admin_key is not None
    with running_server(create_app(platform)) as url:
        yield Served(url, platform, platform.new_admin_key)
