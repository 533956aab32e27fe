"""Safe reading of zip archives of class folders.

Every entry name is checked (no absolute paths, no `..`, no symlinks, no encryption) and every
byte is counted while it is decompressed, so limits hold even when the archive's headers lie.
Nothing is ever extracted to disk: callers get (class, name, bytes) records one at a time.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from openmaas.errors import PayloadTooLarge, ValidationFailed

_READ_CHUNK = 64 * 1024
_IGNORED_PARTS = ("__MACOSX",)


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds that stop zip bombs: total and per-entry decompressed bytes, and compression ratio."""

    max_total_bytes: int = 2 * 1024**3
    max_entry_bytes: int = 64 * 1024**2
    max_entries: int = 200_000
    max_ratio: float = 200.0
    # Tiny files compress extremely well (a blank PNG); the ratio is only checked above this size.
    ratio_floor_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class ArchiveEntry:
    """One member file of a class-folder archive."""

    name: str
    label: str
    data: bytes


@dataclass(frozen=True)
class ArchiveLayout:
    """The class folders of an archive: files per class, and folders that hold no files."""

    files: dict[str, list[zipfile.ZipInfo]]
    empty_classes: list[str]
    stray_files: list[str]


def _unsafe(message: str, code: str) -> ValidationFailed:
    return ValidationFailed(message, param="file", code=code)


def check_entry_name(info: zipfile.ZipInfo) -> PurePosixPath:
    """Return the entry's path, or raise when the name or kind of the entry is unsafe."""
    name = info.filename
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _unsafe(f"archive entry {name!r} has an absolute path", "unsafe_path")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise _unsafe(f"archive entry {name!r} escapes the archive with '..'", "unsafe_path")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise _unsafe(f"archive entry {name!r} is a symbolic link", "symlink_in_archive")
    if info.flag_bits & 0x1:
        raise _unsafe(f"archive entry {name!r} is encrypted", "encrypted_archive")
    return PurePosixPath(*[part for part in parts if part])


def open_archive(path: Path | str) -> zipfile.ZipFile:
    """Open a zip archive, turning a corrupt one into a clear error."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _unsafe(f"the archive is corrupt: {exc}", "corrupt_archive") from exc


def _is_ignored(path: PurePosixPath) -> bool:
    return any(part in _IGNORED_PARTS or part.startswith(".") for part in path.parts)


def archive_layout(archive: zipfile.ZipFile, limits: ArchiveLimits) -> ArchiveLayout:
    """Check every entry name and group files by class folder (an optional single root folder
    wrapping the class folders is allowed, as zipping a folder produces)."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise PayloadTooLarge(f"the archive has more than {limits.max_entries} entries", param="file")
    paths = [(info, check_entry_name(info)) for info in infos]
    paths = [(info, path) for info, path in paths if path.parts and not _is_ignored(path)]
    roots = {path.parts[0] for _, path in paths}
    strip = 1 if len(roots) == 1 and any(len(p.parts) >= 3 for _, p in paths) else 0
    files: dict[str, list[zipfile.ZipInfo]] = {}
    folders: set[str] = set()
    stray: list[str] = []
    for info, path in paths:
        parts = path.parts[strip:]
        if info.is_dir():
            if len(parts) == 1:
                folders.add(parts[0])
            continue
        if len(parts) < 2:
            stray.append(info.filename)
            continue
        files.setdefault(parts[0], []).append(info)
    empty = sorted(folder for folder in folders if folder not in files)
    return ArchiveLayout(files=dict(sorted(files.items())), empty_classes=empty, stray_files=stray)


class BoundedReader:
    """Reads archive entries while counting decompressed bytes against the limits."""

    def __init__(self, archive: zipfile.ZipFile, limits: ArchiveLimits) -> None:
        self.archive = archive
        self.limits = limits
        self.total_bytes = 0
        self.total_compressed = 0

    def read(self, info: zipfile.ZipInfo) -> bytes:
        chunks: list[bytes] = []
        entry_bytes = 0
        try:
            with self.archive.open(info) as handle:
                while chunk := handle.read(_READ_CHUNK):
                    entry_bytes += len(chunk)
                    self.total_bytes += len(chunk)
                    self._check(info, entry_bytes)
                    chunks.append(chunk)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
            raise _unsafe(f"the archive is corrupt at {info.filename!r}: {exc}", "corrupt_archive") from exc
        self.total_compressed += info.compress_size
        return b"".join(chunks)

    def _check(self, info: zipfile.ZipInfo, entry_bytes: int) -> None:
        limits = self.limits
        if self.total_bytes > limits.max_total_bytes:
            raise PayloadTooLarge(
                f"the archive expands to more than {limits.max_total_bytes} bytes",
                param="file",
                code="zip_bomb",
            )
        if entry_bytes > limits.max_entry_bytes:
            raise PayloadTooLarge(
                f"archive entry {info.filename!r} expands to more than {limits.max_entry_bytes} bytes",
                param="file",
                code="zip_bomb",
            )
        if entry_bytes > limits.ratio_floor_bytes and entry_bytes > limits.max_ratio * max(
            info.compress_size, 1
        ):
            raise _unsafe(
                f"archive entry {info.filename!r} has a compression ratio above {limits.max_ratio:g}",
                "zip_bomb",
            )


def iter_entries(path: Path | str, limits: ArchiveLimits | None = None) -> Iterator[ArchiveEntry]:
    """Yield every class-folder file of the archive with its bytes, one at a time."""
    limits = limits or ArchiveLimits()
    with open_archive(path) as archive:
        layout = archive_layout(archive, limits)
        reader = BoundedReader(archive, limits)
        for label, infos in layout.files.items():
            for info in infos:
                yield ArchiveEntry(name=info.filename, label=label, data=reader.read(info))


def check_archive(path: Path | str, limits: ArchiveLimits | None = None) -> ArchiveLayout:
    """Read the whole archive once, enforcing every limit; return its class layout."""
    limits = limits or ArchiveLimits()
    with open_archive(path) as archive:
        layout = archive_layout(archive, limits)
        reader = BoundedReader(archive, limits)
        for info in archive.infolist():
            if not info.is_dir():
                reader.read(info)
    return layout
