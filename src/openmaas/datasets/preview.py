"""The first rows of a table dataset (CSV, JSON lines, Parquet), read without reading the rest:
what a person checks before training on it. Archives have no rows; their classes are in the
validation schema.

CSV is parsed by `csv_reader`, as training and validation parse it, so the preview shows the cells
as they will be read.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmaas.datasets.formats import DatasetFormat

PREVIEW_ROWS = 20
_MAX_CELL = 80  # characters shown of a long text cell


@dataclass(frozen=True)
class Preview:
    columns: list[str]
    rows: list[list[str]]


def preview_rows(path: Path, fmt: str, limit: int = PREVIEW_ROWS) -> Preview | None:
    """Up to `limit` rows of the table at `path` as text, or None for a format without rows."""
    if fmt == DatasetFormat.CSV:
        from openmaas.datasets import csv_reader

        frame = csv_reader.read_csv(path, nrows=limit, dtype=str, keep_default_na=False)
        return Preview([str(c) for c in frame.columns], [[_cell(v) for v in row] for row in frame.values])
    if fmt == DatasetFormat.JSONL:
        with open(path, encoding="utf-8-sig") as handle:
            records = [json.loads(line) for line in itertools.islice(handle, limit * 2) if line.strip()]
        records = [r for r in records if isinstance(r, dict)][:limit]
        columns = list(dict.fromkeys(key for record in records for key in record))
        return Preview(columns, [[_cell(r.get(c)) for c in columns] for r in records])
    if fmt == DatasetFormat.PARQUET:
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(path).iter_batches(batch_size=limit), None)
        if batch is None:
            return Preview([], [])
        table = batch.to_pylist()
        columns = list(batch.schema.names)
        return Preview(columns, [[_cell(r.get(c)) for c in columns] for r in table])
    return None


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value)
    text = str(value)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"
