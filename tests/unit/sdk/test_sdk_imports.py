"""A client installs and imports without the server: `import openmaas.sdk` loads no database,
no torch and no server-side package, only the SDK, the wire schemas and the unit vocabulary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openmaas

ALLOWED = ("openmaas.sdk", "openmaas.schemas", "openmaas.units")
SERVER_ONLY_LIBRARIES = ("sqlalchemy", "alembic", "torch", "numpy", "fastapi", "starlette", "uvicorn")


def test_importing_the_sdk_loads_nothing_from_the_server_side() -> None:
    probe = (
        "import json, sys\n"
        "import openmaas.sdk\n"
        "from openmaas import AsyncClient, Client\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    # The subprocess imports the same tree as this test does.
    env = {**os.environ, "PYTHONPATH": str(Path(openmaas.__file__).parents[1])}
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60, env=env
    )
    modules = json.loads(found.stdout)

    ours = [m for m in modules if m == "openmaas" or m.startswith("openmaas.")]
    assert "openmaas.sdk.client" in ours
    allowed = [m for m in ours if m in ALLOWED or m.startswith(tuple(f"{a}." for a in ALLOWED))]
    assert sorted(set(ours) - set(allowed)) == ["openmaas"]
    loaded = {m.partition(".")[0] for m in modules}
    assert [lib for lib in SERVER_ONLY_LIBRARIES if lib in loaded] == []
