"""Streaming validation of tables (CSV, JSON lines, Parquet).

Rows are read a bounded chunk at a time (CSV: with the parser training uses, `csv_reader`, so that
what validation accepts training reads; Parquet: one record batch at a time) into bounded
per-column statistics, so memory stays constant in the file size. Column types are inferred at the
end; values that contradict a column's type are reported with their line and column.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from openmaas.datasets import csv_reader
from openmaas.datasets.formats import DatasetFormat
from openmaas.datasets.report import (
    ColumnSchema,
    ColumnType,
    DatasetSchema,
    IssueCollector,
    Severity,
    ValidationReport,
)

MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none", "?", "n/a"})
DISTINCT_CAP = 1000
BAD_VALUES_KEPT = 20
NUMERIC_SHARE = 0.9
MAX_CLASSES = 100
CSV_CHUNK_ROWS = 1024
# Problems after which nothing more of the file is read (so "no rows" would say nothing new).
READING_STOPPED = frozenset(
    {"unterminated_quote", "wrong_field_count", "unreadable_text", "unreadable_parquet"}
)
Row = tuple[int, dict[str, Any]]


def parse_number(value: Any) -> float | None:
    """The float a cell holds, or None when it holds no number (booleans are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_TOKENS


class ColumnStats:
    """Bounded running statistics of one column."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.present = self.missing = self.numeric = self.integer = self.booleans = 0
        self.text_length = 0
        self.counts: dict[str, int] = {}
        self.overflow = False
        self.minimum = math.inf
        self.maximum = -math.inf
        self.non_numeric: list[tuple[int, str]] = []

    def observe(self, value: Any, line: int) -> None:
        if is_missing(value):
            self.missing += 1
            return
        self.present += 1
        text = str(value)
        self.text_length += len(text)
        self._count(text)
        if isinstance(value, bool) or text.lower() in ("true", "false"):
            self.booleans += 1
        number = parse_number(value)
        if number is None:
            if len(self.non_numeric) < BAD_VALUES_KEPT:
                self.non_numeric.append((line, text[:80]))
            return
        self.numeric += 1
        self.integer += number.is_integer()
        self.minimum = min(self.minimum, number)
        self.maximum = max(self.maximum, number)

    def _count(self, text: str) -> None:
        if text in self.counts:
            self.counts[text] += 1
        elif len(self.counts) < DISTINCT_CAP:
            self.counts[text] = 1
        else:
            self.overflow = True

    def column_type(self) -> ColumnType:
        if self.present == 0:
            return ColumnType.EMPTY
        if self.numeric and self.numeric >= NUMERIC_SHARE * self.present:
            return ColumnType.INTEGER if self.integer == self.numeric else ColumnType.FLOAT
        if self.booleans == self.present:
            return ColumnType.BOOLEAN
        if self.overflow or (self.text_length / self.present > 30 and len(self.counts) > self.present / 2):
            return ColumnType.TEXT
        return ColumnType.CATEGORICAL

    def schema(self) -> ColumnSchema:
        kind = self.column_type()
        numeric = kind.is_numeric
        return ColumnSchema(
            name=self.name,
            type=kind,
            missing=self.missing,
            distinct=None if self.overflow else len(self.counts),
            minimum=self.minimum if numeric else None,
            maximum=self.maximum if numeric else None,
        )


def _csv_records(path: Path, nrows: int | None = None) -> Iterator[tuple[str, ...]]:
    """The records of a CSV as training's parser splits them (`csv_reader`), every cell as text,
    the header first; blank lines come as records of empty cells (training skips them)."""
    options = {"header": None, "dtype": object, "keep_default_na": False, "skip_blank_lines": False}
    with csv_reader.read_csv(path, **options, nrows=nrows, chunksize=CSV_CHUNK_ROWS) as chunks:
        for chunk in chunks:
            yield from chunk.itertuples(index=False, name=None)


def _csv_rows(path: Path, issues: IssueCollector) -> Iterator[Row]:
    """Rows with their lines. pandas gives no line numbers, so they are counted here: a record
    starts where the previous one ended, and a quoted value spans as many lines as it holds line
    breaks. A record with no cell filled (a blank line) is no row. Reading stops at the first
    parse error, reported at its line: training could not read past it either.
    """
    import pandas as pd

    header: list[str] | None = None
    seen = 0  # records handed on, the header included
    line = 1  # where the next record starts

    def rows(records: Iterator[tuple[str, ...]]) -> Iterator[Row]:
        nonlocal header, seen, line
        for record in records:
            start, seen = line, seen + 1
            line += 1 + sum(cell.count("\n") for cell in record)
            if header is None:
                header = list(record)
                _check_header(header, path, issues)
            elif any(record):
                yield start, dict(zip(header, record, strict=True))

    try:
        yield from rows(_csv_records(path))
    except pd.errors.EmptyDataError:
        return
    except ValueError as exc:  # pandas' ParserError, a UnicodeDecodeError
        found = csv_reader.problem(exc)
        if found.record is not None:
            # pandas drops the whole chunk it failed in: read again the records before the bad
            # one that the chunk held, so that they are checked and the lines count right.
            yield from rows(islice(_csv_records(path, nrows=found.record), seen, None))
        issues.add(found.code, found.message, file=path.name, line=None if found.record is None else line)


def _check_header(header: list[str], path: Path, issues: IssueCollector) -> None:
    seen: set[str] = set()
    for name in header:
        if not name.strip():
            issues.add("empty_column_name", "a column has no name", file=path.name, line=1)
        elif name in seen:
            issues.add(
                "duplicate_column", f"column {name!r} appears twice", file=path.name, line=1, column=name
            )
        seen.add(name)


def _jsonl_rows(path: Path, issues: IssueCollector) -> Iterator[Row]:
    with open(path, "rb") as raw:
        for line_no, raw_line in enumerate(io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace"), 1):
            if not raw_line.strip():
                continue
            try:
                record = json.loads(raw_line)
            except json.JSONDecodeError as exc:
                issues.add("invalid_json", f"invalid JSON: {exc.msg}", file=path.name, line=line_no)
                continue
            if not isinstance(record, dict):
                issues.add("not_an_object", "each line must be a JSON object", file=path.name, line=line_no)
                continue
            yield line_no, record


def _parquet_rows(path: Path, issues: IssueCollector) -> Iterator[Row]:
    import pyarrow.parquet as pq

    row_no = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=16384):
            for record in batch.to_pylist():
                row_no += 1
                yield row_no, record
    # Damaged data: ArrowInvalid (a ValueError) or, for a corrupt page, a bare OSError.
    except (ValueError, OSError) as exc:
        reason = str(exc).strip().replace(str(path), path.name).splitlines()
        issues.add(
            "unreadable_parquet",
            f"cannot read the Parquet file past row {row_no}: {reason[0] if reason else type(exc).__name__}",
            file=path.name,
        )


def iter_rows(path: Path, fmt: DatasetFormat, issues: IssueCollector) -> Iterator[Row]:
    """Yield (line, record) for each row of a table, reporting unreadable rows as issues."""
    readers = {
        DatasetFormat.CSV: _csv_rows,
        DatasetFormat.JSONL: _jsonl_rows,
        DatasetFormat.PARQUET: _parquet_rows,
    }
    return readers[fmt](path, issues)


def validate_table(path: Path, fmt: DatasetFormat, *, target: str | None = None) -> ValidationReport:
    """Stream the table once, infer its schema and report problems with their location."""
    issues = IssueCollector()
    stats: dict[str, ColumnStats] = {}
    rows = 0
    for line, record in iter_rows(path, fmt, issues):
        rows += 1
        for name, value in record.items():
            stats.setdefault(name, ColumnStats(name)).observe(value, line)
    schema = DatasetSchema(columns=[column.schema() for column in stats.values()])
    for column in stats.values():
        _report_column(column, path, issues)
    if rows == 0 and not any(issue.code in READING_STOPPED for issue in issues.issues):
        issues.add("no_rows", "the file has no data rows", file=path.name)
    if target is not None:
        _check_target(target, stats, schema, path, issues)
    return ValidationReport(fmt, rows, schema, issues.issues, issues.truncated)


def _report_column(column: ColumnStats, path: Path, issues: IssueCollector) -> None:
    if column.column_type().is_numeric:
        for line, value in column.non_numeric:
            issues.add(
                "non_numeric_value",
                f"{value!r} is not a number in numeric column {column.name!r}",
                file=path.name,
                line=line,
                column=column.name,
            )
    elif column.present == 0 and column.missing:
        issues.add(
            "empty_column",
            f"column {column.name!r} has no values",
            severity=Severity.WARNING,
            column=column.name,
        )


def _check_target(
    target: str, stats: dict[str, ColumnStats], schema: DatasetSchema, path: Path, issues: IssueCollector
) -> None:
    column = stats.get(target)
    if column is None:
        issues.add(
            "missing_target", f"the label column {target!r} does not exist", file=path.name, column=target
        )
        return
    if column.missing:
        issues.add("missing_label", f"{column.missing} rows have no label", file=path.name, column=target)
    kind = column.column_type()
    if (
        kind in (ColumnType.CATEGORICAL, ColumnType.BOOLEAN, ColumnType.INTEGER)
        and len(column.counts) <= MAX_CLASSES
    ):
        schema.classes = dict(sorted(column.counts.items()))
    if len(column.counts) == 1 and not column.overflow:
        issues.add(
            "single_class", f"the label column {target!r} has only one class", file=path.name, column=target
        )
