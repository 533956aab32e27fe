"""Training reads tables in any detected format and class-folder archives by media kind."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from openmaas.datasets import ingest
from openmaas.datasets.loading import read_labelled_files, read_table, require_columns
from openmaas.errors import ValidationFailed
from tests.data.builders import png_bytes


def test_read_table_from_csv_jsonl_and_parquet(tmp_path: Path) -> None:
    expected = pd.DataFrame({"x": [1, 2, 3], "label": ["a", "b", "a"]})
    (tmp_path / "a").write_text("x;label\n1;a\n2;b\n3;a\n")
    (tmp_path / "b").write_text("".join(json.dumps(r) + "\n" for r in expected.to_dict("records")))
    expected.to_parquet(tmp_path / "c")
    for name in "abc":
        pd.testing.assert_frame_equal(read_table(tmp_path / name), expected, check_dtype=False)


def test_missing_column_names_the_parameter() -> None:
    with pytest.raises(ValidationFailed) as info:
        require_columns(pd.DataFrame({"x": [1]}), text_column="text")
    assert info.value.param == "text_column"


def test_labelled_files_need_two_classes_and_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/1.png", png_bytes(np.zeros((4, 4))))
        archive.writestr("a/2.wav", b"RIFF\x00\x00\x00\x00WAVEfmt ")
    with pytest.raises(ValidationFailed) as info:
        read_labelled_files(path, "image")
    assert info.value.param == "dataset"
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValidationFailed):
        read_labelled_files(tmp_path / "t.csv", "image")


def test_ingest_from_a_path_keeps_the_source(tmp_path: Path) -> None:
    source = tmp_path / "upload.jsonl"
    source.write_text('{"a": 1}\n')
    stored = ingest(source, tmp_path / "store")
    assert source.exists() and stored.path.read_bytes() == source.read_bytes()
    assert stored.path.name == "data.jsonl"
    again = ingest(io.BytesIO(source.read_bytes()), tmp_path / "other")
    assert again.sha256 == stored.sha256


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    from openmaas.datasets import validate_dataset

    (tmp_path / "a.csv").write_bytes(b"\xef\xbb\xbfx,label\n1,a\n2,b\n")
    (tmp_path / "b.jsonl").write_bytes(b'\xef\xbb\xbf{"x": 1, "label": "a"}\n{"x": 2, "label": "b"}\n')
    for name in ("a.csv", "b.jsonl"):
        assert list(read_table(tmp_path / name).columns) == ["x", "label"]
        report = validate_dataset(tmp_path / name, target="label")
        assert report.ok and [c.name for c in report.schema.columns] == ["x", "label"]


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("quote.csv", b'x,label\n1,a\n2,"b\n3,a\n', "line 3"),
        ("fields.csv", b"x,label\n1,a\n2,b,c\n3,a\n", "line 3"),
        ("latin1.csv", b"x,label\n" + b"1,a\n" * 20_000 + b"2,caf\xe9\n", "UTF-8"),  # past the sniff
        ("big.jsonl", b'{"x": 1}\n{"x": 123456789012345678901234567890}\n', "big"),
        ("broken.parquet", b"PAR1 not really parquet", "Parquet"),
    ],
)
def test_a_table_training_cannot_parse_is_an_input_error(
    tmp_path: Path, name: str, content: bytes, says: str
) -> None:
    """An input error (ValidationFailed) fails a training job at once; any other exception is
    retried, and retrying cannot fix a broken file."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValidationFailed) as info:
        read_table(path)
    assert info.value.param == "dataset" and info.value.code == "dataset_invalid"
    assert says in info.value.message
