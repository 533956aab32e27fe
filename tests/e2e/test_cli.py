"""The `openmaas` command, run as a real subprocess against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.served import Served


class Cli:
    def __init__(self, served: Served, home: Path) -> None:
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # A checkout that is not the installed one (a worktree) runs its own code.
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
            "HOME": str(home),
            "OPENMAAS_HOME": str(home / "server-home"),
            "OPENMAAS_CONFIG_DIR": str(home / "config"),
            "OPENMAAS_URL": served.url,
            "COLUMNS": "200",
        }

    def __call__(
        self, *args: str, key: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if key:
            env["OPENMAAS_API_KEY"] = key
        result = subprocess.run(
            [sys.executable, "-m", "openmaas.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert result.returncode == 0, result.stderr + result.stdout
        return result

    def json(self, *args: str, key: str | None = None) -> object:
        return json.loads(self(*args, "--json", key=key).stdout)


@pytest.fixture
def cli(served: Served, tmp_path: Path) -> Cli:
    return Cli(served, tmp_path)


def test_operator_and_tenant_workflow(cli: Cli, served: Served) -> None:
    org = cli.json("admin", "orgs", "create", "acme", key=served.admin_key)
    assert isinstance(org, dict) and org["name"] == "acme" and org["id"].startswith("org_")
    key = cli.json(
        "admin",
        "keys",
        "create",
        "--org",
        "acme",
        "--scope",
        "admin",
        "--expires-in",
        "30d",
        key=served.admin_key,
    )
    assert isinstance(key, dict) and key["key"].startswith("om-") and key["expires_at"]

    login = cli("login", "--url", served.url, "--key", key["key"])
    assert "acme" in login.stdout
    profiles = Path(cli.env["OPENMAAS_CONFIG_DIR"]) / "profiles.json"
    assert profiles.stat().st_mode & 0o777 == 0o600

    # After login no flags are needed.
    assert "acme" in cli("whoami").stdout
    created = cli.json("keys", "create", "--name", "ci", "--scope", "inference")
    assert isinstance(created, dict) and created["scopes"] == ["inference"]
    listed = cli.json("keys", "list")
    assert isinstance(listed, list) and {k["name"] for k in listed} == {"default", "ci"}
    assert all("key" not in k for k in listed)
    table = cli("keys", "list").stdout
    assert "ci" in table and created["key"] not in table

    revoked = cli.json("keys", "revoke", created["id"])
    assert isinstance(revoked, dict) and revoked["revoked_at"]
    audit = cli.json("audit", "list")
    assert isinstance(audit, list) and {"api_keys.create", "api_keys.revoke"} <= {e["action"] for e in audit}
    orgs = cli.json("admin", "orgs", "list", key=served.admin_key)
    assert isinstance(orgs, list) and [o["name"] for o in orgs] == ["acme"]


def test_errors_exit_non_zero_with_the_message(cli: Cli, served: Served) -> None:
    cli("admin", "orgs", "create", "acme", key=served.admin_key)
    duplicate = cli("admin", "orgs", "create", "acme", key=served.admin_key, check=False)
    assert duplicate.returncode != 0
    assert "already exists" in duplicate.stderr
    bad_key = cli("whoami", key="om-" + "z" * 43, check=False)
    assert bad_key.returncode != 0 and "401" in bad_key.stderr
    no_key = cli("keys", "list", check=False)
    assert no_key.returncode != 0 and "No API key" in no_key.stderr
    bad_scope = cli(
        "admin", "keys", "create", "--org", "acme", "--scope", "wizard", key=served.admin_key, check=False
    )
    assert bad_scope.returncode != 0 and "scopes" in bad_scope.stderr


def test_import_deploy_and_manage_a_model(cli: Cli, served: Served, tmp_path: Path) -> None:
    from openmaas.engine.testing import build_tiny_model

    tenant = served.tenant("acme")
    folder = build_tiny_model(tmp_path / "tiny", "llama", max_position_embeddings=128)
    version = cli.json("models", "import", str(folder), "--name", "tiny", key=tenant.key)
    assert isinstance(version, dict) and version["ref"] == "tiny:1" and version["task"] == "text-generation"
    engine = [
        "--engine",
        "kv_cache_memory_bytes=4194304",
        "--engine",
        "max_num_seqs=4",
        "--engine",
        "max_model_len=128",
        "--engine",
        "cpu_kernels=false",  # a bool setting from the command line; PyTorch's ops serve this one
    ]
    deployed = cli.json("deploy", "tiny:1", "--name", "chat", *engine, key=tenant.key)
    assert isinstance(deployed, dict) and deployed["state"] == "ready" and deployed["name"] == "chat"
    assert deployed["config"]["cpu_kernels"] is False and deployed["config"]["max_num_seqs"] == 4
    listed = cli.json("deployments", "list", key=tenant.key)
    assert isinstance(listed, list) and [d["name"] for d in listed] == ["chat"]
    assert "ready" in cli("deployments", "events", "chat", key=tenant.key).stdout
    stopped = cli.json("deployments", "stop", "chat", key=tenant.key)
    assert isinstance(stopped, dict) and stopped["state"] == "stopped"
    missing = cli("deploy", "nothing", key=tenant.key, check=False)
    assert missing.returncode != 0 and "nothing" in missing.stderr
