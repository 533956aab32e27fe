"""Which server and key a client command uses: flags, then the environment, then the saved profile,
then the server this machine's settings describe (`OPENMAAS_HOST`/`OPENMAAS_PORT`, as `serve`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from openmaas.cli.main import app
from openmaas.cli.profiles import resolve, save_profile
from openmaas.config import Settings


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(home=tmp_path / "home", config_dir=tmp_path / "config", **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("127.0.0.1", 9123, "http://127.0.0.1:9123"),
        ("0.0.0.0", 9123, "http://127.0.0.1:9123"),  # listening everywhere: reach it on loopback
        ("::", 9123, "http://[::1]:9123"),
        ("::1", 9123, "http://[::1]:9123"),
        ("models.internal", 80, "http://models.internal:80"),
    ],
)
def test_without_url_or_profile_the_cli_goes_where_serve_listens(
    tmp_path: Path, host: str, port: int, url: str
) -> None:
    assert resolve(settings(tmp_path, host=host, port=port), None, None).url == url


def test_flags_then_environment_then_profile_come_before_the_server_settings(tmp_path: Path) -> None:
    configured = settings(tmp_path, port=9123)
    save_profile(configured.profiles_path, "default", "http://saved:1/", "om-saved")
    assert resolve(configured, None, None).url == "http://saved:1"
    assert resolve(settings(tmp_path, port=9123, url="http://env:2"), None, None).url == "http://env:2"
    assert resolve(configured, "http://flag:3", None).url == "http://flag:3"


def test_an_unreachable_server_says_how_to_point_the_cli_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAAS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("OPENMAAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENMAAS_PORT", "9")  # discard: nothing listens there
    monkeypatch.delenv("OPENMAAS_URL", raising=False)
    result = CliRunner().invoke(app, ["whoami", "--key", "om-" + "a" * 43])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "http://127.0.0.1:9" in message
    for hint in ("--url", "OPENMAAS_URL", "openmaas login"):
        assert hint in message
    assert "Traceback" not in result.output
