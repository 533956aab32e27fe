"""Dataset format detection from content (magic bytes and a text sniff), never from the file name.

The file name only serves to catch files that lie: a `.csv` whose bytes are a zip archive is
rejected rather than silently treated as either.
"""

from __future__ import annotations

import csv
import enum
import json
from pathlib import Path

from openmaas.errors import UnsupportedMediaType

SNIFF_BYTES = 64 * 1024


class DatasetFormat(enum.StrEnum):
    CSV = "csv"
    PARQUET = "parquet"
    JSONL = "jsonl"
    ZIP = "zip"


class MediaKind(enum.StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WAV = "wav"


_EXTENSIONS: dict[str, DatasetFormat] = {
    ".csv": DatasetFormat.CSV,
    ".tsv": DatasetFormat.CSV,
    ".txt": DatasetFormat.CSV,
    ".parquet": DatasetFormat.PARQUET,
    ".pq": DatasetFormat.PARQUET,
    ".jsonl": DatasetFormat.JSONL,
    ".ndjson": DatasetFormat.JSONL,
    ".json": DatasetFormat.JSONL,
    ".zip": DatasetFormat.ZIP,
}

MEDIA_EXTENSIONS: dict[str, MediaKind] = {
    ".png": MediaKind.PNG,
    ".jpg": MediaKind.JPEG,
    ".jpeg": MediaKind.JPEG,
    ".wav": MediaKind.WAV,
}


def media_kind(head: bytes) -> MediaKind | None:
    """Which media type the first bytes of a file announce, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return MediaKind.PNG
    if head.startswith(b"\xff\xd8\xff"):
        return MediaKind.JPEG
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return MediaKind.WAV
    return None


def claimed_format(filename: str | None) -> DatasetFormat | None:
    """The format a file name's extension claims, or None when it claims none we know."""
    if not filename:
        return None
    return _EXTENSIONS.get(Path(filename).suffix.lower())


def detect_format(path: Path | str) -> DatasetFormat:
    """Detect a dataset's format from its content. Raises UnsupportedMediaType when unknown."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
        size = handle.seek(0, 2)
    # Magic bytes decide; a damaged file of a known kind is reported when it is opened.
    if head.startswith(b"PAR1"):
        return DatasetFormat.PARQUET
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return DatasetFormat.ZIP
    return _detect_text_format(head, truncated=size > len(head))


def _detect_text_format(head: bytes, *, truncated: bool) -> DatasetFormat:
    if not head.strip():
        raise UnsupportedMediaType("the file is empty", param="file", code="empty_file")
    if b"\x00" in head or media_kind(head) is not None:
        raise UnsupportedMediaType(
            "the file is binary but neither Parquet nor a zip archive",
            param="file",
            code="unsupported_format",
        )
    text = (
        head.decode("utf-8", errors="ignore" if truncated else "strict")
        if _is_utf8(head, truncated)
        else None
    )
    if text is None:
        raise UnsupportedMediaType("the file is not UTF-8 text", param="file", code="unsupported_format")
    lines = [line for line in text.removeprefix("\ufeff").splitlines() if line.strip()]
    if truncated and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut in half by the sniff window
    if lines and lines[0].lstrip().startswith("{") and _is_json_object(lines[0]):
        return DatasetFormat.JSONL
    if _looks_like_csv(lines):
        return DatasetFormat.CSV
    raise UnsupportedMediaType(
        "the file is neither CSV nor JSON lines", param="file", code="unsupported_format"
    )


def _is_utf8(head: bytes, truncated: bool) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sniff window is not an error.
        return truncated and exc.start >= len(head) - 3
    return True


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _looks_like_csv(lines: list[str]) -> bool:
    if not lines:
        return False
    sample = "\n".join(lines[:50])
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        # A single-column CSV has no delimiter to sniff; accept plain printable lines.
        return all(line.isprintable() for line in lines[:50])
    widths = {len(row) for row in csv.reader(lines[:50], dialect)}
    return len(widths) <= 2


def sniff_dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    """The CSV dialect of a text sample (comma-separated when it cannot be sniffed)."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel
