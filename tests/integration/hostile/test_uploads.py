"""Hostile dataset uploads and model imports against a real server: archives that escape their
folder, link out or expand without bound, pickled weights (refused, never unpickled), config files
that are not JSON or nest without end, uploads past their limit (by Content-Length and while
streaming), bodies in a form encoding, empty files, odd file names, and a CSV that cannot be parsed.
Each is a 4xx in our error shape naming the field, and leaves no file and no row behind."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from openmaas.datasets.tables import Dataset
from openmaas.engine.testing import build_tiny_model
from tests.data.builders import png_bytes, symlink_zip, zip_bytes
from tests.integration.hostile.wire import error_of, raw_request, request_head, status_and_error
from tests.integration.jobs.harness import job_in, upload, worker_running
from tests.support.leftovers import nothing_left
from tests.support.served import Served, Tenant

PNG = png_bytes(np.full((8, 8), 128.0))
OCTETS = {"content-type": "application/octet-stream"}


def _dataset(api: httpx.Client, data: bytes, filename: str = "d.zip", **params: str) -> httpx.Response:
    return api.post(
        "/v1/datasets", params={"name": "d", "filename": filename, **params}, content=data, headers=OCTETS
    )


BAD_DATASETS: dict[str, tuple[bytes, tuple[int, str, str]]] = {
    "zip_slip_dotdot": (zip_bytes({"a/1.png": PNG, "../../evil/1.png": PNG}), (422, "unsafe_path", "file")),
    "zip_slip_absolute": (
        zip_bytes({"a/1.png": PNG, "/etc/cron.d/1.png": PNG}),
        (422, "unsafe_path", "file"),
    ),
    "zip_slip_windows": (
        zip_bytes({"a/1.png": PNG, "..\\..\\evil\\1.png": PNG}),
        (422, "unsafe_path", "file"),
    ),
    "zip_symlink": (symlink_zip("cats/link.png", "/etc/passwd"), (422, "symlink_in_archive", "file")),
    # 20 MB of zeros in a 20 KB upload: refused once the ratio gives it away, long before the end.
    "zip_bomb": (zip_bytes({"a/big.png": b"\x00" * 20_000_000, "b/1.png": PNG}), (422, "zip_bomb", "file")),
    "zip_truncated": (zip_bytes({"a/1.png": PNG, "b/1.png": PNG})[:-30], (422, "corrupt_archive", "file")),
    "empty_file": (b"", (415, "empty_file", "file")),
    "png_named_csv": (PNG, (415, "unsupported_format", "file")),
}


@pytest.mark.parametrize("case", BAD_DATASETS.values(), ids=BAD_DATASETS.keys())
def test_a_hostile_dataset_is_refused_and_leaves_nothing(
    served: Served, api: httpx.Client, case: tuple[bytes, tuple[int, str, str]]
) -> None:
    data, expected = case
    filename = "d.csv" if expected[1] == "unsupported_format" else "d.zip"
    with nothing_left(served.platform):
        refused = _dataset(api, data, filename)
    assert error_of(refused) == expected, refused.text


@pytest.mark.parametrize(
    "filename",
    [
        "../../etc/passwd.csv",
        "/etc/passwd.csv",
        "..\\evil.csv",
        "a/b.csv",
        "d\x00.csv",
        "d\n.csv",
        "d\x1b.csv",
    ],
)
def test_a_file_name_with_folders_or_control_characters_is_refused(
    served: Served, api: httpx.Client, filename: str
) -> None:
    with nothing_left(served.platform):
        refused = _dataset(api, b"a,b\n1,2\n", filename)
    assert error_of(refused) == (422, "invalid_value", "filename"), refused.text


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=xyz", "application/x-www-form-urlencoded"]
)
def test_an_upload_in_a_form_encoding_is_415(served: Served, api: httpx.Client, content_type: str) -> None:
    """`curl -F file=@data.csv` sends the file wrapped in a form: stored as-is it would be a dataset of
    form boundaries. The body must be the file itself."""
    form = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="d.csv"\r\n\r\n'
        b"a,b\n1,2\n\r\n--xyz--\r\n"
    )
    with nothing_left(served.platform):
        for path in ("/v1/datasets?name=d", "/v1/registry/imports?name=m"):
            refused = api.post(path, content=form, headers={"content-type": content_type})
            assert error_of(refused) == (415, "unsupported_media_type", "file"), refused.text


@pytest.mark.parametrize(
    ("path", "limit_setting"),
    [
        ("/v1/datasets?name=big&filename=big.csv", "max_dataset_bytes"),
        ("/v1/registry/imports?name=big", "max_import_bytes"),
    ],
)
def test_an_upload_declaring_more_than_its_limit_is_refused_before_its_body(
    served: Served, tenant: Tenant, path: str, limit_setting: str
) -> None:
    limit = getattr(served.platform.settings, limit_setting)
    headers = {
        "Authorization": f"Bearer {tenant.key}",
        "Content-Type": "application/octet-stream",
        "Content-Length": str(limit + 1),
    }
    started = time.monotonic()
    with nothing_left(served.platform):
        # Only the head is sent: a server that waited for the body would answer nothing.
        answer = raw_request(served.url, request_head("POST", path, headers), timeout=15)
    status, error = status_and_error(answer)
    assert status == 413 and error["code"] == "payload_too_large" and error["param"] == "file"
    assert str(limit) in str(error["message"])
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("path", "limit_setting"),
    [
        ("/v1/datasets?name=big&filename=big.csv", "max_dataset_bytes"),
        ("/v1/registry/imports?name=big", "max_import_bytes"),
    ],
)
def test_an_upload_streamed_past_its_limit_is_refused_and_leaves_nothing(
    served: Served, api: httpx.Client, path: str, limit_setting: str
) -> None:
    """No Content-Length (chunked): counted as it arrives, cut off past the limit."""
    limit = getattr(served.platform.settings, limit_setting)
    chunk = b"a,b\n" + b"1,2\n" * 16_383  # 64 KiB

    def body() -> Any:
        for _ in range(limit // len(chunk) + 2):
            yield chunk

    with nothing_left(served.platform):
        refused = api.post(path, content=body(), headers=OCTETS)
    assert error_of(refused) == (413, "payload_too_large", "file"), refused.text


def test_an_upload_within_its_limit_still_works(served: Served, api: httpx.Client) -> None:
    created = _dataset(api, b"a,b\n1,2\n3,4\n", "small.csv")
    assert created.status_code == 201, created.text


def test_a_csv_training_cannot_parse_is_refused_at_validation_and_fails_a_job_at_once(
    served: Served, api: httpx.Client, tmp_path: Path
) -> None:
    """Validated with the parser training uses: an unterminated quote fails validation (the dataset
    is `failed`, training on it is refused and creates no job), not three training attempts."""
    rows = "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(40))
    good, unterminated = tmp_path / "tiny.csv", tmp_path / "quote.csv"
    good.write_text("x,y,label\n" + rows)
    unterminated.write_text('x,y,label\n1,2,a\n3,4,b\n5,"6,a\n' + rows)
    with worker_running(served.platform):
        refused = upload(api, unterminated, "quote").json()
        tiny = upload(api, good, "tiny").json()
        job_in(api, f"/v1/jobs/{refused['validation_job_id']}", {"failed"})
        job_in(api, f"/v1/jobs/{tiny['validation_job_id']}", {"succeeded"})
        shown = api.get("/v1/datasets/quote").json()
        assert shown["status"] == "failed"
        first = shown["issues"][0]
        assert (first["code"], first["file"], first["line"]) == ("unterminated_quote", "data.csv", 4)
        with nothing_left(served.platform):
            training = api.post(
                "/v1/training_jobs",
                json={"task": "tabular-classification", "dataset": "quote", "target": "label"},
            )
            assert error_of(training) == (409, "dataset_invalid", "dataset"), training.text

        # A file that was validated, yet training cannot parse (an older release validated it,
        # or the store changed under it): retrying cannot mend it, so the first attempt fails it.
        with served.platform.db.read_session() as session:
            dataset = session.get(Dataset, tiny["id"])
            assert dataset is not None
            stored = served.platform.store.path(dataset.path)
        stored.write_bytes(unterminated.read_bytes())
        created = api.post(
            "/v1/training_jobs",
            json={"task": "tabular-classification", "dataset": "tiny", "target": "label", "max_attempts": 3},
        )
        assert created.status_code == 201, created.text
        trained = job_in(api, f"/v1/training_jobs/{created.json()['id']}", {"succeeded", "failed"})
    assert trained["status"] == "failed" and trained["attempts"] == 1, trained
    error = trained["error"]
    assert (error["code"], error["param"]) == ("dataset_invalid", "dataset")
    assert "never closed" in error["message"] and "line 4" in error["message"]


# --- Model imports --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny", "llama", max_position_embeddings=64)


def _model_zip(
    folder: Path, replace: dict[str, bytes] | None = None, extra: dict[str, bytes] | None = None
) -> bytes:
    """The folder zipped as the SDK does (under one top folder), files replaced or added."""
    entries = {
        f"tiny/{p.relative_to(folder)}": p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }
    for name, data in (replace or {}).items():
        entries[f"tiny/{name}"] = data
    return zip_bytes({**entries, **(extra or {})})


def _import(api: httpx.Client, data: bytes, **params: str) -> httpx.Response:
    return api.post("/v1/registry/imports", params={"name": "m", **params}, content=data, headers=OCTETS)


class _Marker:
    """Unpickling this creates `path`: proof that nobody unpickled it, if `path` never appears."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_pickled_weights_are_refused_and_never_unpickled(
    served: Served, api: httpx.Client, tiny_folder: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Marker(marker))
    with nothing_left(served.platform):
        for name in ("pytorch_model.bin", "weights.pt", "model.pth", "model.pkl", "model.ckpt"):
            refused = _import(api, _model_zip(tiny_folder, extra={f"tiny/{name}": payload}))
            assert error_of(refused) == (422, "pickle_refused", "file"), refused.text
        disguised = _import(api, _model_zip(tiny_folder, replace={"model.safetensors": payload}))
        assert error_of(disguised) == (422, "corrupt_weights", "file"), disguised.text
        as_onnx = _import(api, payload, format="onnx")
        assert error_of(as_onnx) == (422, "invalid_onnx", "file"), as_onnx.text
    assert not marker.exists()


def test_an_archive_escaping_its_folder_is_refused(
    served: Served, api: httpx.Client, tiny_folder: Path
) -> None:
    with nothing_left(served.platform):
        for name in ("../evil.txt", "tiny/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt"):
            refused = _import(api, _model_zip(tiny_folder, extra={name: b"x"}))
            assert error_of(refused) == (422, "unsafe_path", "file"), refused.text
        linked = _import(api, symlink_zip("tiny/config.json", "/etc/passwd"))
        assert error_of(linked) == (422, "symlink_in_archive", "file"), linked.text
        bomb = _import(api, _model_zip(tiny_folder, extra={"tiny/zeros.txt": b"\x00" * 8_000_000}))
        assert error_of(bomb) == (413, "zip_bomb", "file"), bomb.text


def _config(folder: Path, **changes: Any) -> bytes:
    return json.dumps({**json.loads((folder / "config.json").read_text()), **changes}).encode()


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_a_config_that_is_not_json_or_nests_without_end_is_refused(
    served: Served, api: httpx.Client, tiny_folder: Path
) -> None:
    rng = np.random.default_rng(0)
    huge = rng.bytes(700_000).hex()  # 1.4 MB that does not compress away
    configs = {
        "not_json": b"{nope",
        "not_utf8": b'{"a": "\xff"}',
        "not_an_object": b'"config"',
        "nested_100000": b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "nested_300": _config(tiny_folder, extra=_deep(300)),
        "nan": _config(tiny_folder, rope_theta=float("nan")),
        "infinity": _config(tiny_folder, rope_theta=float("inf")),
        "huge": _config(tiny_folder, extra=huge),
    }
    with nothing_left(served.platform):
        for case, config in configs.items():
            refused = _import(api, _model_zip(tiny_folder, replace={"config.json": config}))
            assert error_of(refused) == (422, "invalid_model_folder", "file"), (case, refused.text)
            assert "config.json" in refused.json()["error"]["message"]
    created = _import(api, _model_zip(tiny_folder))
    assert created.status_code == 201, created.text
    assert api.get(f"/v1/registry/versions/{created.json()['ref']}").status_code == 200
