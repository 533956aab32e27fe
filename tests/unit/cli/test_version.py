"""`openmaas --version` prints the installed version, the one the package and its metadata carry."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import openmaas
from openmaas.cli.main import run


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(["--version"])
    assert exited.value.code in (0, None)
    assert capsys.readouterr().out.strip() == f"openmaas {openmaas.__version__}"


def test_the_package_metadata_takes_its_version_from_the_package() -> None:
    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]
    assert "version" in project.get("dynamic", [])
