"""Validation infers the schema and reports each problem with where it is."""

from __future__ import annotations

import io
import json
import wave
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from openmaas.datasets import ColumnType, DatasetFormat, validate_dataset
from openmaas.datasets.loading import read_table
from openmaas.errors import ValidationFailed
from tests.data.builders import png_bytes


def _codes(report: object) -> list[str]:
    return [issue.code for issue in report.issues]  # type: ignore[attr-defined]


def _wav(rate: int, seconds: float = 0.1, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(b"\x00" * width * int(rate * seconds))
    return buffer.getvalue()


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def test_csv_schema_counts_and_a_bad_number_with_its_line_and_column(tmp_path: Path) -> None:
    rows = ["age,city,score,label"] + [f"{20 + i},{'ab'[i % 2]},{i / 3:.2f},{'yn'[i % 2]}" for i in range(30)]
    rows[7] = "27,a,not-a-number,y"
    path = tmp_path / "d.csv"
    path.write_text("\n".join(rows) + "\n")
    report = validate_dataset(path, target="label")
    assert report.format == DatasetFormat.CSV and report.rows == 30
    types = {column.name: column.type for column in report.schema.columns}
    assert types == {
        "age": ColumnType.INTEGER,
        "city": ColumnType.CATEGORICAL,
        "score": ColumnType.FLOAT,
        "label": ColumnType.CATEGORICAL,
    }
    assert report.schema.classes == {"n": 15, "y": 15}
    (issue,) = report.issues
    assert (issue.code, issue.file, issue.line, issue.column) == ("non_numeric_value", "d.csv", 8, "score")
    assert not report.ok


def test_rows_with_the_wrong_number_of_fields_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,4,5\n4,5\n6,7\n")
    report = validate_dataset(path)
    assert [(i.code, i.line) for i in report.issues] == [("wrong_field_count", 3)]
    assert report.rows == 1  # training's parser stops there, so validation does


def test_a_short_row_is_read_as_training_reads_it_with_its_last_cells_missing(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,x\n3\n4,5,y\n6,7,x\n")
    report = validate_dataset(path, target="label")
    assert report.rows == 4 == len(read_table(path))
    assert report.schema.column("b").missing == 1  # type: ignore[union-attr]
    assert [(i.code, i.column) for i in report.errors] == [("missing_label", "label")]


def test_a_label_column_with_one_class_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"x": i, "label": "same"}) + "\n" for i in range(20)))
    report = validate_dataset(path, target="label")
    assert _codes(report) == ["single_class"]
    assert report.issues[0].column == "label"


def test_missing_label_column_and_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"x": 1}\n{"x": 2\n[1, 2]\n{"x": 3}\n')
    report = validate_dataset(path, target="y")
    assert [(i.code, i.line) for i in report.issues] == [
        ("invalid_json", 2),
        ("not_an_object", 3),
        ("missing_target", None),
    ]
    assert report.rows == 2


def test_parquet_schema_and_bad_value_by_row(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    values = [str(i) for i in range(40)]
    values[12] = "oops"
    pd.DataFrame({"n": values, "f": np.arange(40) / 7, "label": ["a", "b"] * 20}).to_parquet(path)
    report = validate_dataset(path, target="label")
    assert report.rows == 40 and report.schema.classes == {"a": 20, "b": 20}
    assert [(i.code, i.line, i.column) for i in report.issues] == [("non_numeric_value", 13, "n")]
    assert report.schema.column("f").type == ColumnType.FLOAT  # type: ignore[union-attr]


def test_image_archive_sizes_unreadable_image_and_empty_class(tmp_path: Path) -> None:
    png = png_bytes(np.zeros((6, 4)))
    path = _zip(
        tmp_path / "d.zip",
        {
            "cats/1.png": png,
            "cats/2.png": png,
            "dogs/1.png": png_bytes(np.ones((10, 10))),
            "dogs/broken.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 30,
            "birds/": b"",
            "cats/fake.jpg": png,
        },
    )
    report = validate_dataset(path)
    assert report.schema.classes == {"cats": 2, "dogs": 1}
    assert report.schema.image_sizes == {"4x6": 2, "10x10": 1}
    assert report.schema.media_kind == "image"
    found = {(i.code, i.file) for i in report.issues}
    assert found == {
        ("empty_class", "birds/"),
        ("unreadable_image", "dogs/broken.png"),
        ("type_mismatch", "cats/fake.jpg"),
    }
    assert report.rows == 3 and not report.ok


def test_audio_archive_sample_rates_and_unreadable_audio(tmp_path: Path) -> None:
    path = _zip(
        tmp_path / "d.zip",
        {
            "yes/1.wav": _wav(8000),
            "yes/2.wav": _wav(16000),
            "no/1.wav": _wav(8000, width=1),
            "no/2.wav": b"RIFF\x00\x00\x00\x00WAVEjunk",
        },
    )
    report = validate_dataset(path)
    assert report.schema.sample_rates == {8000: 2, 16000: 1}
    assert report.schema.media_kind == "audio"
    assert [(i.code, i.file) for i in report.issues] == [("unreadable_audio", "no/2.wav")]


def test_archive_with_a_single_class_and_stray_files(tmp_path: Path) -> None:
    png = png_bytes(np.zeros((4, 4)))
    path = _zip(tmp_path / "d.zip", {"only/1.png": png, "readme.png": png})
    assert set(_codes(validate_dataset(path))) == {"file_outside_class_folder", "single_class"}


def _peak_memory_validating(path: Path, rows: int) -> int:
    import tracemalloc

    # pandas' parser reads 256 KiB of text at a time, whatever the file's size: a long note makes
    # even the small file larger than that, so the two compare what grows with the file.
    note = "n" * 100
    with open(path, "w") as handle:
        handle.write("id,value,label,note\n")
        for i in range(rows):
            handle.write(f"{i},{i * 0.5},{'abc'[i % 3]},{note}\n")
    tracemalloc.start()
    report = validate_dataset(path, target="label")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report.rows == rows and report.ok
    return peak


def test_validation_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    small = _peak_memory_validating(tmp_path / "small.csv", 8_000)
    large = _peak_memory_validating(tmp_path / "large.csv", 40_000)
    assert large < small * 1.25


# Validation reads a CSV with the parser training reads it with: what one refuses, so does the other.
TRICKY_CSVS = {
    "unterminated_quote": 'x,y,label\n1,2,a\n3,4,b\n5,"6,a\n7,8,b\n',
    "too_many_fields": "x,y,label\n1,2,a\n3,4,b,extra\n5,6,a\n",
    "quoted_newline": 'x,y,label\n1,"two\nlines",a\n3,4,b\n5,6,a\n',
    "quote_inside_a_field": 'x,y,label\n1,2,a\n3,fo"ur,b\n5,6,a\n',
    "single_quotes": "x,y,label\n1,'2',a\n3,'4,5',b\n6,7,a\n",
    "blank_lines": "x,y,label\n1,2,a\n\n3,4,b\n\n5,6,a\n",
}


def test_an_unterminated_quote_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(TRICKY_CSVS["unterminated_quote"])
    report = validate_dataset(path, target="label")
    assert not report.ok
    assert [(i.code, i.file, i.line) for i in report.errors] == [("unterminated_quote", "d.csv", 4)]
    assert report.rows == 2  # the rows before it were read and checked


@pytest.mark.parametrize("name", sorted(TRICKY_CSVS))
def test_validation_accepts_exactly_what_training_reads(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.csv"
    path.write_text(TRICKY_CSVS[name])
    report = validate_dataset(path, target="label")
    try:
        frame = read_table(path)
    except ValidationFailed:
        assert not report.ok, report.issues
    else:
        assert report.ok, report.issues
        assert report.rows == len(frame)
        assert [column.name for column in report.schema.columns] == list(frame.columns)


def test_lines_count_quoted_newlines_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    rows = "".join(f"{n},row {n}\n" for n in range(3, 20))
    path.write_text(f'n,note\n1,"a note\nover two lines"\n\n2,plain\noops,x\n{rows}')
    (issue,) = validate_dataset(path).issues
    assert (issue.code, issue.line, issue.column) == ("non_numeric_value", 6, "n")


def test_a_wrong_field_count_after_a_quoted_newline_names_its_physical_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('a,b\n1,"x\ny\nz"\n\n3,4\n5,6,7\n')
    assert [(i.code, i.line) for i in validate_dataset(path).errors] == [("wrong_field_count", 7)]


def test_an_unreadable_parquet_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pd.DataFrame({"x": np.arange(1000), "label": ["a", "b"] * 500}).to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[:200] + b"\x00" * 500 + data[700:])
    report = validate_dataset(path)
    assert not report.ok and [i.code for i in report.errors] == ["unreadable_parquet"]
