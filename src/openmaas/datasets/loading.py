"""Loading a validated dataset into memory for training: tables as pandas DataFrames, archives
as (bytes, label) lists. Validation streams; training needs the (split) data at hand anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from openmaas.datasets.archive import ArchiveLimits, iter_entries
from openmaas.datasets.formats import DatasetFormat, MediaKind, detect_format, media_kind, sniff_dialect
from openmaas.errors import ValidationFailed


@dataclass(frozen=True)
class LabelledFiles:
    data: list[bytes]
    labels: list[str]
    names: list[str]


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a CSV, JSON lines or Parquet file (detected by content) into a DataFrame."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == DatasetFormat.PARQUET:
        return pd.read_parquet(path)
    if fmt == DatasetFormat.JSONL:
        return pd.read_json(path, lines=True, encoding="utf-8-sig")
    if fmt == DatasetFormat.CSV:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            dialect = sniff_dialect(handle.read(64 * 1024))
        return pd.read_csv(path, sep=dialect.delimiter, encoding="utf-8-sig")
    raise ValidationFailed("this task needs a table (CSV, JSON lines or Parquet)", param="dataset")


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
