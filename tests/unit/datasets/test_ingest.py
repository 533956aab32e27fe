"""Uploads land whole or not at all: every rejected upload leaves the destination untouched."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from openmaas.datasets import ArchiveLimits, DatasetFormat, ingest
from openmaas.datasets.archive import iter_entries
from openmaas.errors import OpenMaaSError, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from tests.data.builders import png_bytes, symlink_zip, zip_bytes

PNG = png_bytes(np.full((8, 8), 128.0))


def _corrupt_zip() -> bytes:
    data = bytearray(zip_bytes({"a/1.png": png_bytes(np.zeros((8, 8))) * 50, "b/1.png": b"x" * 5000}))
    data[60:200] = b"\x00" * 140  # inside the first entry's compressed bytes
    return bytes(data)


def _lying_size_zip() -> bytes:
    """Headers claim a 100-byte file whose stream inflates to 5 MB (a bomb hiding its size)."""
    data = bytearray(zip_bytes({"a/big.png": b"\x00" * 5_000_000, "b/x.png": PNG}))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = data.find(signature)
        data[start + offset : start + offset + 4] = (100).to_bytes(4, "little")
    return bytes(data)


def _incompressible(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(size)


Invalid, Unsupported = ValidationFailed, UnsupportedMediaType
BAD_UPLOADS: list[tuple[str, bytes, str, type[OpenMaaSError], str]] = [
    ("traversal", zip_bytes({"../evil/1.png": PNG, "a/1.png": PNG}), "d.zip", Invalid, "unsafe_path"),
    ("absolute", zip_bytes({"/etc/cron.d/x.png": PNG}), "d.zip", Invalid, "unsafe_path"),
    ("symlink", symlink_zip("cats/link.png", "/etc/passwd"), "d.zip", Invalid, "symlink_in_archive"),
    (
        "ratio_bomb",
        zip_bytes({"a/big.png": b"\x00" * 20_000_000, "b/1.png": PNG}),
        "d.zip",
        Invalid,
        "zip_bomb",
    ),
    (
        "size_bomb",
        zip_bytes({f"a/{i}.png": _incompressible(3_000_000, i) for i in range(4)}, zipfile.ZIP_STORED),
        "d.zip",
        PayloadTooLarge,
        "zip_bomb",
    ),
    ("lying_header", _lying_size_zip(), "d.zip", Invalid, "corrupt_archive"),
    ("corrupt", _corrupt_zip(), "d.zip", Invalid, "corrupt_archive"),
    ("truncated", zip_bytes({"a/1.png": PNG, "b/1.png": PNG})[:-30], "d.zip", Invalid, "corrupt_archive"),
    (
        "zip_named_csv",
        zip_bytes({"a/1.png": PNG, "b/1.png": PNG}),
        "data.csv",
        Unsupported,
        "type_mismatch",
    ),
    ("csv_named_parquet", b"a,b\n1,2\n", "data.parquet", Unsupported, "type_mismatch"),
    ("png_named_csv", PNG, "data.csv", Unsupported, "unsupported_format"),
    ("corrupt_parquet", b"PAR1" + b"\x00" * 100 + b"PAR1", "d.parquet", Unsupported, "corrupt_file"),
]
LIMITS = ArchiveLimits(max_total_bytes=10_000_000, max_ratio=100.0)


@pytest.mark.parametrize(
    ("case", "data", "filename", "error", "code"), BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS]
)
def test_bad_upload_is_rejected_and_leaves_nothing(
    tmp_path: Path, case: str, data: bytes, filename: str, error: type[OpenMaaSError], code: str
) -> None:
    dest = tmp_path / "dataset"
    with pytest.raises(error) as info:
        ingest(io.BytesIO(data), dest, filename=filename, archive_limits=LIMITS)
    assert info.value.code == code
    assert info.value.param == "file"
    assert list(dest.iterdir()) == []


def test_upload_over_the_size_limit_is_413_and_leaves_nothing(tmp_path: Path) -> None:
    chunks = (b"a,b\n" + b"1,2\n" * 1000 for _ in range(100))
    with pytest.raises(PayloadTooLarge):
        ingest(chunks, tmp_path / "d", filename="x.csv", max_bytes=50_000)
    assert list((tmp_path / "d").iterdir()) == []


def test_good_upload_is_hashed_and_named_by_its_format(tmp_path: Path) -> None:
    data = b"x,label\n1,a\n2,b\n"
    first = ingest(io.BytesIO(data), tmp_path / "one", filename="upload.csv")
    second = ingest([data[:5], data[5:]], tmp_path / "two")
    assert first.format == DatasetFormat.CSV
    assert first.path.read_bytes() == data and first.path.name == "data.csv"
    assert first.sha256 == second.sha256 == hashlib.sha256(data).hexdigest()
    assert first.size_bytes == len(data)
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["data.csv"]


def test_archive_entries_are_read_with_their_class(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(zip_bytes({"root/cats/1.png": PNG, "root/dogs/2.png": PNG, "__MACOSX/._x": b"junk"}))
    entries = list(iter_entries(path))
    assert [(e.label, e.data == PNG) for e in entries] == [("cats", True), ("dogs", True)]
