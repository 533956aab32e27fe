"""Loading a validated dataset into memory for training: tables as pandas DataFrames, archives
as (bytes, label) lists. Validation streams; training needs the (split) data at hand anyway.

A file that cannot be parsed raises `ValidationFailed` (code `dataset_invalid`): an input error,
which fails a job at once, where any other exception is retried, and no retry mends a broken file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from openmaas.datasets import csv_reader
from openmaas.datasets.archive import ArchiveLimits, iter_entries
from openmaas.datasets.formats import DatasetFormat, MediaKind, detect_format, media_kind
from openmaas.errors import ValidationFailed

_FORMAT_NAMES = {
    DatasetFormat.CSV: "CSV",
    DatasetFormat.JSONL: "JSON lines",
    DatasetFormat.PARQUET: "Parquet",
}


@dataclass(frozen=True)
class LabelledFiles:
    data: list[bytes]
    labels: list[str]
    names: list[str]


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a CSV, JSON lines or Parquet file (detected by content) into a DataFrame."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == DatasetFormat.CSV:
        try:
            frame: pd.DataFrame = csv_reader.read_csv(path)
        except ValueError as exc:  # pandas' ParserError, a UnicodeDecodeError
            found = csv_reader.problem(exc)
            # Record n starts on line n + 1 unless a quoted value before it spans lines.
            near = "" if found.record is None else f" (near line {found.record + 1})"
            raise _unreadable(fmt, found.message + near) from None
        return frame
    if fmt not in (DatasetFormat.PARQUET, DatasetFormat.JSONL):
        raise ValidationFailed("this task needs a table (CSV, JSON lines or Parquet)", param="dataset")
    try:
        if fmt == DatasetFormat.PARQUET:
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True, encoding="utf-8-sig")
    # pyarrow reports damaged Parquet as ArrowInvalid (a ValueError) or OSError; pandas' JSON
    # reader says ValueError, or TypeError for a line that is not an object among objects.
    except (ValueError, TypeError, OSError) as exc:
        text = str(exc).strip().replace(str(path), path.name)  # never show where the store keeps it
        raise _unreadable(fmt, text.splitlines()[0] if text else type(exc).__name__) from None


def _unreadable(fmt: DatasetFormat, reason: str) -> ValidationFailed:
    message = f"the dataset cannot be read as {_FORMAT_NAMES[fmt]}: {reason}"
    return ValidationFailed(message, param="dataset", code="dataset_invalid")


def read_labelled_files(path: Path | str, kind: str, limits: ArchiveLimits | None = None) -> LabelledFiles:
    """Read a class-folder archive's usable files of `kind` ("image" or "audio")."""
    path = Path(path)
    if detect_format(path) != DatasetFormat.ZIP:
        raise ValidationFailed("this task needs a zip archive of class folders", param="dataset")
    wanted = {MediaKind.WAV} if kind == "audio" else {MediaKind.PNG, MediaKind.JPEG}
    data: list[bytes] = []
    labels: list[str] = []
    names: list[str] = []
    for entry in iter_entries(path, limits):
        if media_kind(entry.data[:16]) in wanted:
            data.append(entry.data)
            labels.append(entry.label)
            names.append(entry.name)
    if len(set(labels)) < 2:
        raise ValidationFailed(
            f"the archive needs {kind} files in at least two class folders", param="dataset"
        )
    return LabelledFiles(data, labels, names)


def require_columns(frame: pd.DataFrame, **columns: str | None) -> None:
    """Raise ValidationFailed naming the parameter whose column the table lacks."""
    for param, name in columns.items():
        if name is not None and name not in frame.columns:
            raise ValidationFailed(f"column {name!r} (from {param}) is not in the dataset", param=param)
