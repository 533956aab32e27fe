"""Format detection looks at content, never at the file name."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from openmaas.datasets import DatasetFormat, detect_format
from openmaas.datasets.hashing import sha256_chunks, sha256_file
from openmaas.errors import UnsupportedMediaType


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_csv_jsonl_parquet_and_zip_are_told_apart_by_content(tmp_path: Path) -> None:
    csv = _write(tmp_path / "a.bin", b"x,y,label\n1,2,a\n3,4,b\n")
    jsonl = _write(tmp_path / "b.bin", b'{"x": 1, "label": "a"}\n{"x": 2, "label": "b"}\n')
    parquet = tmp_path / "c.bin"
    pd.DataFrame({"x": [1, 2]}).to_parquet(parquet)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/1.txt", "x")
    zipped = _write(tmp_path / "d.bin", archive.getvalue())
    assert detect_format(csv) == DatasetFormat.CSV
    assert detect_format(jsonl) == DatasetFormat.JSONL
    assert detect_format(parquet) == DatasetFormat.PARQUET
    assert detect_format(zipped) == DatasetFormat.ZIP


def test_semicolon_and_tab_separated_text_is_csv(tmp_path: Path) -> None:
    assert detect_format(_write(tmp_path / "a", b"a;b\n1;2\n3;4\n")) == DatasetFormat.CSV
    assert detect_format(_write(tmp_path / "b", b"a\tb\n1\t2\n")) == DatasetFormat.CSV


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"\x00\x01\x02\x03binary", "é".encode("latin-1") * 9],
)
def test_unknown_or_binary_content_is_unsupported(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        detect_format(_write(tmp_path / "x.csv", data))
    assert info.value.param == "file"


def test_hash_is_streamed_sha256(tmp_path: Path) -> None:
    data = b"abc" * 1_000_000
    path = _write(tmp_path / "x", data)
    assert sha256_file(path, chunk_size=4096) == sha256_chunks([data[:10], data[10:]])
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
