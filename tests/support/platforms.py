"""Building a migrated platform (with its operator key) for a test."""

from __future__ import annotations

import secrets
from pathlib import Path

from openmaas.bootstrap import Platform, build_platform, ensure_admin_key
from openmaas.clock import Clock
from openmaas.config import Settings
from openmaas.db import migrate


def make_platform(home: Path, database_url: str, clock: Clock | None = None, **overrides: object) -> Platform:
    settings = Settings(
        home=home,
        database_url=database_url,
        secret_key=secrets.token_hex(32),
        config_dir=home / "config",
        **overrides,  # type: ignore[arg-type]
    )
    platform = build_platform(settings, clock=clock)
    migrate.upgrade(platform.db)
    ensure_admin_key(platform)
    return platform
