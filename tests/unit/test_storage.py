"""The artifact store chosen from OPENMAAS_STORAGE_URL: a folder (a path or a file:// URL) is the
local store; a URL the platform cannot serve yet is refused, never replaced by a local folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmaas.config import Settings
from openmaas.storage import LocalArtifactStore, open_store


def test_a_folder_or_a_file_url_opens_the_local_store(tmp_path: Path) -> None:
    for url in (str(tmp_path / "store"), f"file://{tmp_path / 'store'}"):
        store = open_store(url)
        assert isinstance(store, LocalArtifactStore) and store.root == tmp_path / "store"
        assert store.path(store.model_dir("org", "mv_1")) == (tmp_path / "store/models/org/mv_1").resolve()
        assert open_store(store.url).path(".") == store.path(".")  # what a job process opens


def test_the_default_store_is_a_folder_under_home(tmp_path: Path) -> None:
    store = open_store(Settings(home=tmp_path).resolved_storage_url)
    assert store.path(".") == (tmp_path / "artifacts").resolve()


def test_paths_outside_the_store_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside the artifact store"):
        open_store(str(tmp_path)).path("../elsewhere")


def test_a_url_without_a_backend_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"gopher://bucket/artifacts.*fsspec backend"):
        open_store("gopher://bucket/artifacts")
    with pytest.raises(ValueError, match="unknown parameters colour"):
        open_store("s3://bucket/artifacts?colour=red")


def test_a_staged_write_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    with pytest.raises(RuntimeError), store.staged("models/org/mv_1") as folder:
        folder.mkdir()
        (folder / "weights").write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert not (tmp_path / "models/org/mv_1").exists()
    with store.staged("models/org/mv_2") as folder:
        folder.mkdir()
        (folder / "weights").write_bytes(b"whole")
        assert not (tmp_path / "models/org/mv_2").exists()
    with store.reading("models/org/mv_2") as read:
        assert (read / "weights").read_bytes() == b"whole"
    assert store.listdir("models/org") == ["mv_2"]  # no scratch left beside it
    assert store.size("models/org") == 5
    store.remove("models/org/mv_2")
    with pytest.raises(FileNotFoundError), store.reading("models/org/mv_2"):
        pass


def test_scratch_a_killed_writer_left_goes_and_a_live_ones_stays(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess

    ended = subprocess.Popen(["true"])
    ended.wait()
    store = open_store(str(tmp_path))
    host = socket.gethostname()
    left = tmp_path / "models/org" / f".staging-{host}-{ended.pid}-abc123"
    live = tmp_path / "models/org" / f".staging-{host}-{os.getppid()}-def456"
    other_host = tmp_path / "models/org" / f".staging-elsewhere-{ended.pid}-ghi789"
    for folder in (left, live, other_host):
        (folder / "mv_1").mkdir(parents=True)
    store.clear_abandoned()
    assert not left.exists() and live.is_dir() and other_host.is_dir()
