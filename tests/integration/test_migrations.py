"""Migrations upgrade from empty, downgrade and upgrade again, on each database; a database
newer than the code is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from openmaas.db import migrate
from openmaas.db.database import Database
from openmaas.tables import Base


def _tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        assert _tables(db) == set()
        migrate.upgrade(db)
        assert _tables(db) == set(Base.metadata.tables)
        assert migrate.schema_state(db).is_current
        migrate.downgrade(db, "base")
        assert _tables(db) == set()
        migrate.upgrade(db)
        assert _tables(db) == set(Base.metadata.tables)
    finally:
        db.dispose()


def test_migrated_schema_matches_the_models(empty_database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    db = Database(empty_database_url)
    try:
        migrate.upgrade(db)
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
    finally:
        db.dispose()


def test_database_newer_than_the_code_is_refused(empty_database_url: str, tmp_path: Path) -> None:
    db = Database(empty_database_url)
    try:
        migrate.upgrade(db)
        with db.session() as session:
            session.execute(text("DELETE FROM alembic_version"))
            session.execute(text("INSERT INTO alembic_version (version_num) VALUES ('9999_from_the_future')"))
        with pytest.raises(migrate.DatabaseTooNew, match="newer version"):
            migrate.check_not_too_new(db)
    finally:
        db.dispose()
    env = {
        "OPENMAAS_HOME": str(tmp_path / "home"),
        "OPENMAAS_DATABASE_URL": empty_database_url,
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "openmaas.cli.main", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "newer version" in result.stderr + result.stdout
