"""A user's mistake (a bad setting or flag, a file that is not what the command takes, a database
that is not there) ends `openmaas` with one message on stderr saying what to do and a non-zero
exit, never a Python traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmaas.cli.main import run

KEY = "om-" + "a" * 43


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENMAAS_URL", "OPENMAAS_API_KEY", "OPENMAAS_DATABASE_URL", "OPENMAAS_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENMAAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENMAAS_CONFIG_DIR", str(tmp_path / "config"))


def failure(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `openmaas ARGS`, which must fail; its stderr, on one line."""
    with pytest.raises(SystemExit) as exited:
        run(list(args))
    assert exited.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "╭" not in err, err
    assert err.count("Error:") == 1 and err.count("\n") == 1, err
    return " ".join(err.split())


def test_a_setting_that_does_not_parse_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAAS_PORT", "eighty")
    message = failure(capsys, "whoami", "--key", KEY)
    assert "OPENMAAS_PORT" in message and "eighty" in message


def test_a_model_file_that_is_neither_a_folder_nor_onnx(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = tmp_path / "model.bin"  # .gguf and .onnx files are models
    model.write_bytes(b"GGUF")
    message = failure(
        capsys, "models", "import", str(model), "--name", "m", "--key", KEY, "--url", "http://127.0.0.1:9"
    )
    assert "model.bin" in message and "folder" in message and ".onnx" in message and ".gguf" in message


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--url", "localhost:8000"], "--url"),
        (["--url", "ftp://models"], "--url"),
        (["--url", "http://"], "--url"),
    ],
)
def test_a_url_that_is_not_a_server_url_is_named(
    capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    message = failure(capsys, "whoami", "--key", KEY, *args)
    assert named in message and "http://127.0.0.1:8000" in message


def test_a_server_url_from_the_environment_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAAS_URL", "127.0.0.1:8000")
    assert "OPENMAAS_URL" in failure(capsys, "whoami", "--key", KEY)


def test_a_damaged_profiles_file_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    profiles = tmp_path / "config" / "profiles.json"
    profiles.parent.mkdir()
    profiles.write_text("{not json")
    message = failure(capsys, "whoami")
    assert str(profiles) in message and "openmaas login" in message


def test_a_database_url_that_does_not_parse(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAAS_DATABASE_URL", "not a url")
    assert "OPENMAAS_DATABASE_URL" in failure(capsys, "db", "upgrade")


def test_a_database_that_cannot_be_reached(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAAS_DATABASE_URL", "postgresql+psycopg://openmaas:secret@127.0.0.1:9/nothing")
    message = failure(capsys, "db", "upgrade")
    assert "OPENMAAS_DATABASE_URL" in message and "127.0.0.1" in message
    assert "secret" not in message  # the password is never printed


def test_a_home_that_is_not_a_folder(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "a-file"
    home.write_text("")
    monkeypatch.setenv("OPENMAAS_HOME", str(home / "home"))
    assert str(home) in failure(capsys, "db", "upgrade")


def test_a_storage_url_that_is_not_supported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAAS_STORAGE_URL", "gopher://artifacts")
    assert "OPENMAAS_STORAGE_URL" in failure(capsys, "db", "upgrade")


def test_a_malformed_admin_key_stops_serve_with_what_to_do(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAAS_ADMIN_KEY", "hunter2")
    message = failure(capsys, "serve")
    assert "OPENMAAS_ADMIN_KEY" in message and "om-" in message and "unset" in message.lower()
    assert "hunter2" not in message
