"""`OPENMAAS_EXECUTOR`: `local` or `ray`; anything else, or `ray` without Ray installed, is an error
at start that names the setting (the CLI prints it as one line)."""

from __future__ import annotations

import importlib.util

import pytest
from pydantic import ValidationError

from openmaas.config import Settings


def test_an_unknown_executor_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENMAAS_EXECUTOR", "kubernetes")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert raised.value.errors()[0]["loc"] == ("executor",)
    assert "'local' or 'ray'" in str(raised.value)


def test_ray_without_the_cluster_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    monkeypatch.setenv("OPENMAAS_EXECUTOR", "ray")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "pip install 'openmaas[cluster]'" in str(raised.value)


def test_the_local_path_does_not_import_ray() -> None:
    import subprocess
    import sys

    code = "import sys, openmaas.job_process, openmaas.jobs.worker; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
