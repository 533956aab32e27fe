"""The training workflow through the `openmaas` command (real subprocesses, a real server and a
worker): upload with validation, train with --follow, then the registry commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openmaas.api.app import create_app
from tests.data.builders import breast_cancer_csv
from tests.integration.jobs.harness import fast_platform, worker_running
from tests.support.served import Served, Tenant
from tests.support.server import running_server


class Cli:
    def __init__(self, served: Served, home: Path, tenant: Tenant) -> None:
        self.cwd = home
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "OPENMAAS_CONFIG_DIR": str(home / "config"),
            "OPENMAAS_URL": served.url,
            "OPENMAAS_API_KEY": tenant.key,
            "COLUMNS": "200",
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "openmaas.cli.main", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr + result.stdout
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Iterator[Cli]:
    platform = fast_platform(tmp_path / "home", database_url)
    assert platform.new_admin_key is not None
    with running_server(create_app(platform)) as url, worker_running(platform):
        served = Served(url, platform, platform.new_admin_key)
        yield Cli(served, tmp_path, served.tenant("acme"))
    platform.close()


def test_upload_train_follow_and_registry_commands(cli: Cli, tmp_path: Path) -> None:
    data = breast_cancer_csv(tmp_path / "cancer.csv")
    dataset = cli.json("datasets", "upload", str(data), "--name", "cancer", "--target", "label")
    assert dataset["status"] == "ready" and dataset["rows"] == 569

    trained = cli(
        "train",
        "--task",
        "tabular-classification",
        "--dataset",
        "cancer",
        "--target",
        "label",
        "--param",
        "epochs=3",
        "--param",
        "hidden_sizes=[16]",
        "--follow",
    )
    assert "Succeeded: model version cancer:1" in trained.stdout, trained.stdout
    assert "3/3" in trained.stdout  # the per-epoch bar reached the last epoch

    bad = cli(
        "train", "--task", "tabular-classification", "--dataset", "cancer", "--param", "epochs=0", check=False
    )
    assert bad.returncode != 0 and "epochs" in bad.stderr
    misspelt = cli(
        "train", "--task", "tabular-classification", "--dataset", "cancer", "--param", "epoch=5", check=False
    )
    assert misspelt.returncode != 0 and "did you mean 'epochs'?" in misspelt.stderr, misspelt.stderr

    assert [m["name"] for m in cli.json("models", "list")] == ["cancer"]
    cli("models", "alias", "cancer", "production", "1")
    version = cli.json("models", "show", "cancer@production")
    assert version["ref"] == "cancer:1" and version["aliases"] == ["production"]
    compared = cli("models", "compare", "cancer:1", "cancer@production").stdout
    assert "accuracy" in compared
    cli("models", "download", "cancer@production", "--output", str(tmp_path / "model.zip"))
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        assert {"manifest.json", "model.safetensors"} <= set(archive.namelist())
    refused = cli("models", "delete", "cancer:1", check=False)
    assert refused.returncode != 0 and "production" in refused.stderr
    cli("models", "alias", "cancer", "production", "--remove")
    assert cli.json("models", "delete", "cancer:1")["ref"] == "cancer:1"
    assert cli.json("models", "delete", "cancer")["name"] == "cancer"  # the whole model
    assert cli.json("models", "list") == []

    kinds = {job["kind"]: job["status"] for job in cli.json("jobs", "list")}
    assert kinds == {"validate_dataset": "succeeded", "train": "succeeded"}


def test_train_help_lists_each_task_parameters_with_their_defaults() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "openmaas.cli.main", "train", "--help"],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "COLUMNS": "200",
            "NO_COLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())  # Rich wraps and pads the help text
    for task, parameter in [
        ("tabular-classification", "hidden_sizes=[64, 32]"),
        ("tabular-regression", "target=target"),
        ("image-classification", "channels=[16, 32]"),
        ("text-classification", "architecture=lstm"),
        ("audio-classification", "blocks_per_stage=1"),
        ("recommendation", "factors=32"),
    ]:
        assert task in text and parameter in text, (task, parameter)
    assert "epochs=20" in text and "rating_column=null" in text
