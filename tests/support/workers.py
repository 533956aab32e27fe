"""`openmaas worker` as a real subprocess on a test platform's home and database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from openmaas.config import Settings


def start_worker(
    settings: Settings, log: Path, env: dict[str, str], *, own_session: bool = False
) -> subprocess.Popen[bytes]:
    """Start a worker whose output goes to `log` (appended); `env` adds `OPENMAAS_*` settings.

    `own_session`: in a process group of its own, so that a SIGKILL to the group reaches its job
    processes too."""
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(settings.home),
        "OPENMAAS_HOME": str(settings.home),
        "OPENMAAS_DATABASE_URL": settings.resolved_database_url,
        "OPENMAAS_SECRET_KEY": settings.secret_key or "",
        # The tree under test, when it is not the installed one (a git worktree).
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "openmaas.cli.main", "worker"],
            env={**base, **env},
            stdout=out,
            stderr=out,
            start_new_session=own_session,
        )
