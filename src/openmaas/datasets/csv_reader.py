"""The one way a CSV dataset is parsed, by training (`loading.read_table`) and by validation
(`tabular_validation`) alike: pandas' C parser, the delimiter sniffed from the file's start, a
byte-order mark dropped. A file that validation accepts is therefore a file that training reads.

A parse error becomes a `CsvProblem` naming the record where pandas stopped. What is done with the
parsed cells (training lets pandas infer column types, validation infers its own schema from the
text) is up to the caller; the parsing itself is decided here only. pandas is imported when a file
is read, so importing `openmaas.datasets` stays light.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmaas.datasets.formats import SNIFF_BYTES, sniff_dialect

ENCODING = "utf-8-sig"

# pandas' C parser reports records, 1-based ("line") or 0-based ("row"), header included.
_FIELD_COUNT = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_OPEN_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")


@dataclass(frozen=True)
class CsvProblem:
    """Why a CSV cannot be parsed; `record` is the 0-based record (the header is 0), if known."""

    code: str
    message: str
    record: int | None = None


def read_csv(path: Path, **options: Any) -> Any:
    """`pandas.read_csv` with the dataset's parse options; `options` may only change what is done
    with the cells (header, dtype, missing values, chunks), never how the text is split."""
    import pandas as pd

    with open(path, encoding=ENCODING, newline="") as handle:
        dialect = sniff_dialect(handle.read(SNIFF_BYTES))
    return pd.read_csv(path, sep=dialect.delimiter, encoding=ENCODING, engine="c", **options)


def problem(exc: ValueError) -> CsvProblem:
    """The problem behind a parse error of `read_csv` (pandas' ParserError, a decoding error)."""
    if isinstance(exc, UnicodeDecodeError):
        return CsvProblem("unreadable_text", f"the file is not UTF-8 text: {exc.reason}")
    text = str(exc)
    if found := _FIELD_COUNT.search(text):
        expected, line, saw = (int(group) for group in found.groups())
        return CsvProblem("wrong_field_count", f"expected {expected} fields, found {saw}", line - 1)
    if found := _OPEN_QUOTE.search(text):
        return CsvProblem(
            "unterminated_quote",
            "a quoted field opens here and is never closed (the file ends inside it)",
            int(found.group(1)),
        )
    last = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
    return CsvProblem("unreadable_text", f"cannot read the file as CSV: {last}")
