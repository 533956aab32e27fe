"""Streaming uploads with progress: a file sent in chunks (as the body itself, or as the file part of
a multipart form), or a folder zipped first."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1024 * 1024
Progress = Callable[[int, int], None]  # (bytes sent, total bytes)
# Weights barely compress: storing them saves minutes of CPU on large models.
_STORED_SUFFIXES = (".safetensors", ".onnx", ".png", ".jpg", ".jpeg", ".zip", ".gz")


def file_chunks(path: Path, progress: Progress | None = None) -> Iterator[bytes]:
    total = path.stat().st_size
    sent = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sent += len(chunk)
            if progress is not None:
                progress(sent, total)
            yield chunk


async def async_file_chunks(path: Path, progress: Progress | None = None) -> AsyncIterator[bytes]:
    """`file_chunks` for `httpx.AsyncClient`, which wants an async body."""
    for chunk in file_chunks(path, progress):
        yield chunk


def form_chunks(
    path: Path, fields: dict[str, str], boundary: str, progress: Progress | None = None
) -> Iterator[bytes]:
    """A `multipart/form-data` body of the text `fields` and `path` as the part `file`, streamed:
    only the form's framing is built here, the file follows in chunks."""
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    filename = path.name.replace('"', "%22")
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield head
    yield from file_chunks(path, progress)
    yield f"\r\n--{boundary}--\r\n".encode()


async def async_form_chunks(
    path: Path, fields: dict[str, str], boundary: str, progress: Progress | None = None
) -> AsyncIterator[bytes]:
    for chunk in form_chunks(path, fields, boundary, progress):
        yield chunk


@contextmanager
def zipped_folder(folder: Path) -> Iterator[Path]:
    """A temporary zip of `folder` (its files, relative to it), removed afterwards."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    with tempfile.TemporaryDirectory(prefix="openmaas-upload-") as tmp:
        archive = Path(tmp) / f"{folder.name}.zip"
        with zipfile.ZipFile(archive, "w") as out:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    stored = path.suffix.lower() in _STORED_SUFFIXES
                    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                    out.write(path, path.relative_to(folder).as_posix(), compress_type=method)
        yield archive
