"""OpenMaaS commands (`openmaas worker`, `openmaas serve`) as real subprocesses on a test
platform's home and database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from openmaas.config import Settings


def process_env(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """The environment of a subprocess on `settings`' home, database and secret; `env` adds
    `OPENMAAS_*` settings."""
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(settings.home),
        "OPENMAAS_HOME": str(settings.home),
        "OPENMAAS_DATABASE_URL": settings.resolved_database_url,
        "OPENMAAS_SECRET_KEY": settings.secret_key or "",
        # The tree under test, when it is not the installed one (a git worktree).
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }
    return {**base, **env}


def start_command(
    command: str,
    settings: Settings,
    log: Path,
    env: dict[str, str],
    *,
    own_session: bool = False,
    args: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """`openmaas <command>` whose output goes to `log` (appended).

    `own_session`: in a process group of its own, so that a SIGKILL to the group reaches its job
    processes too."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "openmaas.cli.main", command, *args],
            env=process_env(settings, env),
            stdout=out,
            stderr=out,
            start_new_session=own_session,
        )


def start_worker(
    settings: Settings, log: Path, env: dict[str, str], *, own_session: bool = False
) -> subprocess.Popen[bytes]:
    """An `openmaas worker` (see `start_command`)."""
    return start_command("worker", settings, log, env, own_session=own_session)
