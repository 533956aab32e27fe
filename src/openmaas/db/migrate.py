"""Alembic, driven from code: upgrade, downgrade and the "is this database current?" check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from openmaas.db.database import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseTooNew(RuntimeError):
    """The database was migrated by a newer OpenMaaS than this one."""


@dataclass(frozen=True)
class SchemaState:
    current: tuple[str, ...]
    head: tuple[str, ...]
    unknown: tuple[str, ...]

    @property
    def is_current(self) -> bool:
        return set(self.current) == set(self.head)


def _config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return config


def schema_state(db: Database) -> SchemaState:
    script = ScriptDirectory.from_config(_config(db))
    known = {rev.revision for rev in script.walk_revisions()}
    with db.engine.connect() as connection:
        current = tuple(MigrationContext.configure(connection).get_current_heads())
    head = tuple(script.get_heads())
    return SchemaState(current, head, tuple(r for r in current if r not in known))


def check_not_too_new(db: Database) -> SchemaState:
    state = schema_state(db)
    if state.unknown:
        raise DatabaseTooNew(
            f"The database is at revision {', '.join(state.unknown)}, which this version of OpenMaaS "
            "does not know: it was migrated by a newer version. Run that version, or restore a backup."
        )
    return state


def upgrade(db: Database, revision: str = "heads") -> None:
    """Apply migrations up to `revision`; the default, `heads`, also covers parallel branches."""
    check_not_too_new(db)
    with db.engine.begin() as connection:
        config = _config(db)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(db: Database, revision: str) -> None:
    with db.engine.begin() as connection:
        config = _config(db)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
