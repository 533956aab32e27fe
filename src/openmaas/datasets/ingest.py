"""Ingest an uploaded dataset file into a destination folder: streamed, size-limited, hashed,
its format detected from content and, for archives, every entry checked for safety.

The bytes go to a hidden staging file inside the destination and are renamed into place only
once every check has passed, so a rejected upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from openmaas.datasets.archive import ArchiveLimits, check_archive
from openmaas.datasets.formats import DatasetFormat, claimed_format, detect_format
from openmaas.datasets.hashing import CHUNK_SIZE
from openmaas.errors import PayloadTooLarge, UnsupportedMediaType

DEFAULT_MAX_BYTES = 1024**3


@dataclass(frozen=True)
class IngestedFile:
    """A dataset file that passed the upload checks and now lives at `path`."""

    path: Path
    format: DatasetFormat
    sha256: str
    size_bytes: int


def _chunks(source: BinaryIO | Iterable[bytes]) -> Iterable[bytes]:
    if isinstance(source, io.IOBase) or hasattr(source, "read"):
        reader = cast(BinaryIO, source)
        while chunk := reader.read(CHUNK_SIZE):
            yield chunk
    else:
        yield from cast(Iterable[bytes], source)


def ingest(
    source: BinaryIO | Iterable[bytes] | Path,
    dest_dir: Path | str,
    *,
    filename: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    archive_limits: ArchiveLimits | None = None,
) -> IngestedFile:
    """Copy `source` (a path, a binary file or an iterable of chunks) to `dest_dir/data.<format>`.

    Raises PayloadTooLarge past `max_bytes`, UnsupportedMediaType for unknown formats or a file
    name that claims another format than the content, ValidationFailed for unsafe or corrupt
    archives. On any error `dest_dir` is left as it was.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    if isinstance(source, Path):
        filename = filename or source.name
    fd, staging_name = tempfile.mkstemp(prefix=".upload-", dir=dest)
    staging = Path(staging_name)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            handle = open(source, "rb") if isinstance(source, Path) else None  # noqa: SIM115
            try:
                for chunk in _chunks(handle if handle is not None else source):  # type: ignore[arg-type]
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"the upload is larger than {max_bytes} bytes", param="file")
                    digest.update(chunk)
                    out.write(chunk)
            finally:
                if handle is not None:
                    handle.close()
        fmt = _checked_format(staging, filename, archive_limits)
        final = dest / f"data.{fmt.value}"
        os.replace(staging, final)
        return IngestedFile(path=final, format=fmt, sha256=digest.hexdigest(), size_bytes=size)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _checked_format(path: Path, filename: str | None, limits: ArchiveLimits | None) -> DatasetFormat:
    fmt = detect_format(path)
    claimed = claimed_format(filename)
    if claimed is not None and claimed != fmt:
        raise UnsupportedMediaType(
            f"{filename!r} is named as {claimed.value} but its content is {fmt.value}",
            param="file",
            code="type_mismatch",
        )
    if fmt == DatasetFormat.ZIP:
        check_archive(path, limits)
    elif fmt == DatasetFormat.PARQUET:
        _check_parquet(path)
    return fmt


def _check_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path).schema_arrow  # noqa: B018 - reading the footer is the check
    except Exception as exc:
        raise UnsupportedMediaType(
            f"the Parquet file is corrupt: {exc}", param="file", code="corrupt_file"
        ) from exc
