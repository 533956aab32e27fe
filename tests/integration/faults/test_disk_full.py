"""The artifact store's disk fills up during an upload: the upload is refused with 507 (Insufficient
Storage) in our error shape naming `file`, nothing of it stays on disk or in the database, and the
server goes on working — a small upload succeeds once the space is free again.

The store is a 2 MiB tmpfs mounted for the test (root only; skipped otherwise, saying why), and an
upload of 3 MiB fills it part-way through."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from openmaas.api.app import create_app
from openmaas.bootstrap import Platform
from openmaas.datasets.tables import Dataset
from openmaas.jobs.tables import Job
from openmaas.registry.tables import ModelVersion
from tests.integration.faults.conftest import Figures
from tests.support.platforms import make_platform
from tests.support.served import Served
from tests.support.server import running_server

STORE_BYTES = 2 * 1024 * 1024
UPLOAD_BYTES = 3 * 1024 * 1024

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="mounts a small tmpfs as the artifact store: needs root on Linux",
)


@contextmanager
def small_disk(folder: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted on `folder` for the block, always unmounted after."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)  # still busy: detach it


def _files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if not path.is_dir())


def _rows(platform: Platform) -> dict[str, int]:
    with platform.db.read_session() as session:
        return {
            table.__name__: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in (Dataset, Job, ModelVersion)
        }


def _csv(size: int) -> bytes:
    row = b"0.123456789,0.987654321,yes\n"
    return b"a,b,label\n" + row * (size // len(row))


@pytest.fixture
def platform_on_a_small_disk(tmp_path: Path) -> Iterator[Platform]:
    home = tmp_path / "home"
    with small_disk(home / "artifacts", STORE_BYTES):
        platform = make_platform(home, f"sqlite:///{tmp_path / 'openmaas.db'}")
        try:
            yield platform
        finally:
            platform.close()


def test_an_upload_that_fills_the_disk_answers_507_and_leaves_nothing(
    platform_on_a_small_disk: Platform, figures: Figures
) -> None:
    platform = platform_on_a_small_disk
    store = platform.store.path(".")
    assert platform.new_admin_key is not None
    with running_server(create_app(platform)) as url:
        served = Served(url, platform, platform.new_admin_key)
        tenant = served.tenant("acme")
        before = (_files(store), _rows(platform))
        with served.client(tenant.key) as api:
            dataset = api.post(
                "/v1/datasets",
                params={"name": "big", "filename": "big.csv"},
                content=_csv(UPLOAD_BYTES),
                headers={"Content-Type": "application/octet-stream"},
            )
            after_dataset = (_files(store), _rows(platform))
            model = api.post(
                "/v1/registry/imports",
                params={"name": "big", "format": "onnx"},
                content=os.urandom(UPLOAD_BYTES),
                headers={"Content-Type": "application/octet-stream"},
            )
            after_model = (_files(store), _rows(platform))
            listed = api.get("/v1/datasets").json()["data"]
            small = api.post(
                "/v1/datasets",
                params={"name": "small", "filename": "small.csv"},
                content=_csv(4096),
                headers={"Content-Type": "application/octet-stream"},
            )
    figures(
        **{
            "store size (bytes)": STORE_BYTES,
            "upload size (bytes)": UPLOAD_BYTES,
            "dataset upload": _answer(dataset),
            "model import": _answer(model),
            "files left after them": len(after_model[0]) - len(before[0]),
            "rows left after them": {k: v - before[1][k] for k, v in after_model[1].items()},
            "small upload afterwards": small.status_code,
        }
    )
    for refused in (dataset, model):
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"]["code"] == "insufficient_storage"
        assert refused.json()["error"]["param"] == "file"
    assert after_dataset == before and after_model == before  # not a byte, not a row
    assert listed == []
    assert small.status_code == 201, small.text
    assert small.json()["name"] == "small"


def _answer(response: httpx.Response) -> str:
    error = response.json().get("error") or {}
    return f"{response.status_code} {error.get('code')} (param {error.get('param')})"
