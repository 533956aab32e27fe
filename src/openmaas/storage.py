"""The artifact store: where dataset files, job checkpoints and logs, and model artifacts live.

Services see the `ArtifactStore` protocol: paths relative to the store's root (the database keeps
those, so the store can move), read through `reading` (a local path for the length of a block) and
written through `staged` (a local path to write; it becomes the stored file or folder only when
the block ends without an error, so nothing half-written is ever published).

- `LocalArtifactStore` is a folder: under `OPENMAAS_HOME` by default, in cluster mode a shared
  filesystem every worker mounts. Reading is the stored file itself; a staged write is renamed
  into place (same filesystem), so it costs what writing in place did.
- `RemoteArtifactStore` is any fsspec filesystem; `s3://bucket/prefix` (s3fs, the `cluster` extra)
  for an S3-compatible store. Reading downloads into a bounded local cache (stored things are
  immutable: a dataset, a version, a checkpoint is never rewritten under its name); a staged write
  is uploaded when its block ends, and removed again if the upload fails.

`open_store` chooses the store from `OPENMAAS_STORAGE_URL`. Nothing here knows what is stored:
checkpoints belong to training, artifacts to the registry.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from openmaas import errors
from openmaas.config import CACHE_MB_PARAM, CACHE_PARAM

FILE_SCHEME = "file://"
STAGING = ".staging"  # names the private scratch of a store's writers


class ArtifactStore(Protocol):
    @property
    def url(self) -> str:
        """What another process passes to `open_store` to reach this same store."""
        ...

    def dataset_dir(self, org_id: str, dataset_id: str) -> str: ...

    def model_dir(self, org_id: str, version_id: str) -> str: ...

    def job_dir(self, job_id: str) -> str: ...

    def reading(self, relative: str) -> AbstractContextManager[Path]:
        """A local path of the stored file or folder, to read within the block (FileNotFoundError
        when nothing is stored there)."""
        ...

    def staged(self, relative: str) -> AbstractContextManager[Path]:
        """A local path, not existing yet, to write a file or a folder at; it is published as
        `relative` when the block ends without an error (replacing a file of that name), and
        nothing of it is kept otherwise. Its parent is a private scratch folder on the same
        filesystem, where the writer may keep temporary files of its own (they go with it)."""
        ...

    def listdir(self, relative: str) -> list[str]:
        """The names directly under a stored folder, sorted ([] when there is none)."""
        ...

    def size(self, relative: str) -> int:
        """The bytes of a stored file, or of every file under a stored folder (0: none)."""
        ...

    def remove(self, relative: str) -> None:
        """Remove a stored file or folder and everything under it (gone already: nothing to do)."""
        ...

    def clear_abandoned(self) -> None:
        """Remove the scratch that writers on this machine left when they were killed."""
        ...


class _Layout:
    """Where each kind of thing lives, the same in every store."""

    def dataset_dir(self, org_id: str, dataset_id: str) -> str:
        return f"datasets/{org_id}/{dataset_id}"

    def model_dir(self, org_id: str, version_id: str) -> str:
        return f"models/{org_id}/{version_id}"

    def job_dir(self, job_id: str) -> str:
        return f"jobs/{job_id}"


def _checked(relative: str) -> str:
    """`relative` normalised; refuses absolute paths and anything that climbs out of the store."""
    parts = [part for part in relative.replace("\\", "/").split("/") if part not in ("", ".")]
    if relative.startswith("/") or ".." in parts:
        raise ValueError(f"{relative!r} is outside the artifact store")
    return "/".join(parts)


_HOST = socket.gethostname()


@contextmanager
def _scratch(parent: Path) -> Iterator[Path]:
    """A new private folder in `parent`, named by host and process so that what a killed process
    left can be told from what a live one is using (`_clear_abandoned`)."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{STAGING}-{_HOST}-{os.getpid()}-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _clear_abandoned(found: Iterator[Path]) -> None:
    for entry in list(found):
        owner, _, pid = entry.name.rpartition("-")[0].rpartition("-")
        if (
            owner == f"{STAGING}-{_HOST}"
            and pid.isdigit()
            and int(pid) != os.getpid()
            and not process_alive(int(pid))
        ):
            shutil.rmtree(entry, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalArtifactStore(_Layout):
    """The store as a folder of the local (or a mounted, shared) filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def url(self) -> str:
        return str(self.root)

    def path(self, relative: str) -> Path:
        """The stored path itself (this store only: others have no local path)."""
        resolved = (self.root / relative).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ValueError(f"{relative!r} is outside the artifact store")
        return resolved

    @contextmanager
    def reading(self, relative: str) -> Iterator[Path]:
        path = self.path(relative)
        if not path.exists():
            raise FileNotFoundError(f"nothing is stored at {relative!r}")
        yield path

    @contextmanager
    def staged(self, relative: str) -> Iterator[Path]:
        final = self.path(relative)
        # Beside its destination: the rename is on one filesystem, and no scratch is left behind.
        with _scratch(final.parent) as scratch:
            path = scratch / final.name
            yield path
            if path.exists():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, final)  # atomic: the whole file or folder appears at once

    def listdir(self, relative: str) -> list[str]:
        folder = self.path(relative)
        return sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else []

    def size(self, relative: str) -> int:
        path = self.path(relative)
        if path.is_file():
            return path.stat().st_size
        if not path.is_dir():
            return 0
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())

    def remove(self, relative: str) -> None:
        path = self.path(relative)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def clear_abandoned(self) -> None:
        # Scratch sits beside what it publishes: models/<org>/, datasets/<org>/, jobs/<id>/ and
        # the folders in a job's (checkpoints, optimisation marks); no deeper.
        for depth in range(1, 4):
            _clear_abandoned(self.root.glob("*/" * depth + f"{STAGING}-*"))


class ReadCache:
    """Local copies of stored files and folders, at most `max_bytes` together (the least recently
    used go first). An entry in use by a `reading` block of this process is never removed, nor one
    used in the last `grace_s` (another process of this machine may be reading it). Each entry is
    built in scratch and renamed into place: one that exists is whole."""

    def __init__(self, folder: Path, max_bytes: int, grace_s: float = 600.0) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._pinned: Counter[str] = Counter()

    def entry(self, relative: str) -> Path:
        """Where the copy of `relative` goes: under its quoted parent, with its own name (which
        messages about it may show)."""
        parent, _, name = relative.rpartition("/")
        return self.folder / "objects" / quote(parent, safe="") / name

    @contextmanager
    def pinned(self, relative: str) -> Iterator[Path]:
        with self._lock:
            self._pinned[relative] += 1
        try:
            yield self.entry(relative)
        finally:
            with self._lock:
                self._pinned[relative] -= 1
                if not self._pinned[relative]:
                    del self._pinned[relative]

    def make_room(self, need: int) -> None:
        """Remove least recently used entries until `need` more bytes fit within the bound."""
        root = self.folder / "objects"
        if not root.is_dir():
            return
        entries = [(entry.stat().st_mtime, _bytes(entry), entry) for entry in root.glob("*/*")]
        total = sum(size for _, size, _ in entries) + need
        now = time.time()
        for mtime, size, entry in sorted(entries, key=lambda found: found[0]):
            if total <= self.max_bytes:
                return
            relative = f"{unquote(entry.parent.name)}/{entry.name}".lstrip("/")
            if relative in self._pinned or now - mtime < self.grace_s:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            total -= size


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class RemoteArtifactStore(_Layout):
    """The store on an fsspec filesystem (S3 and its kin), read through a local cache."""

    def __init__(self, url: str, fs: Any, root: str, cache: ReadCache) -> None:
        self._url = url
        self.fs = fs
        self.root = root.rstrip("/")
        self.cache = cache

    @property
    def url(self) -> str:
        return self._url

    def _remote(self, relative: str) -> str:
        checked = _checked(relative)
        return f"{self.root}/{checked}" if checked else self.root

    @contextmanager
    def reading(self, relative: str) -> Iterator[Path]:
        relative = _checked(relative)
        with self.cache.pinned(relative) as local:
            if local.exists():
                with contextlib.suppress(OSError):
                    os.utime(local)  # recently used: the last to go
            else:
                self._fetch(relative, local)
            yield local

    def _fetch(self, relative: str, local: Path) -> None:
        remote = self._remote(relative)
        if not self.fs.exists(remote):
            raise FileNotFoundError(f"nothing is stored at {relative!r}")
        self.cache.make_room(self.size(relative))
        with _scratch(self.cache.folder / STAGING) as scratch:
            copy = scratch / "copy"
            if self.fs.isdir(remote):
                copy.mkdir()
                for source in self.fs.find(remote):
                    target = copy / source[len(remote) :].lstrip("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(source, str(target))
            else:
                self.fs.get_file(remote, str(copy))
            local.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # another process fetched it meanwhile: theirs stays
                os.replace(copy, local)

    @contextmanager
    def staged(self, relative: str) -> Iterator[Path]:
        relative = _checked(relative)
        with _scratch(self.cache.folder / STAGING) as scratch:
            path = scratch / Path(relative).name
            yield path
            if not path.exists():
                return
            remote = self._remote(relative)
            try:
                if path.is_dir():
                    for source in sorted(p for p in path.rglob("*") if p.is_file()):
                        self.fs.put_file(str(source), f"{remote}/{source.relative_to(path).as_posix()}")
                else:
                    self.fs.put_file(str(path), remote)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.fs.rm(remote, recursive=True)
                raise
            self.fs.invalidate_cache()

    def listdir(self, relative: str) -> list[str]:
        remote = self._remote(relative)
        try:
            found = self.fs.ls(remote, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(name.rstrip("/").rsplit("/", 1)[-1] for name in found if name.rstrip("/") != remote)

    def size(self, relative: str) -> int:
        remote = self._remote(relative)
        try:
            return int(self.fs.du(remote, total=True))
        except FileNotFoundError:
            return 0

    def remove(self, relative: str) -> None:
        relative = _checked(relative)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._remote(relative), recursive=True)
        self.fs.invalidate_cache()
        local = self.cache.entry(relative)
        if local.is_dir():
            shutil.rmtree(local, ignore_errors=True)
        else:
            local.unlink(missing_ok=True)

    def clear_abandoned(self) -> None:
        _clear_abandoned((self.cache.folder / STAGING).glob(f"{STAGING}-*"))


_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextmanager
def space_for(what: str, param: str) -> Iterator[None]:
    """Turn a full disk (or quota) while writing `what` into the store into a 507 naming `param`;
    the caller removes what it wrote, as after any other failure."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _OUT_OF_SPACE:
            raise
        raise errors.InsufficientStorage(
            f"The artifact store has no space left for {what}; nothing of it was kept. "
            "Free space in the store (or ask the operator to), then retry.",
            param=param,
        ) from exc


ENDPOINT_PARAM = "endpoint_url"


def open_store(url: str) -> ArtifactStore:
    """The store at `url`: a folder, as a path or a `file://` URL; or an fsspec URL such as
    `s3://bucket/prefix` (the `cluster` extra), optionally with `?endpoint_url=…` for an
    S3-compatible service (else `AWS_ENDPOINT_URL`), `cache=<folder>` and `cache_mb=<size>` for the
    local read cache. Credentials come from the usual AWS variables or files. Raises ValueError
    for a URL it cannot open, naming what is missing."""
    folder = url.removeprefix(FILE_SCHEME)
    if "://" not in folder:
        return LocalArtifactStore(Path(folder))
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    cache = Path(query.pop(CACHE_PARAM, str(Path(tempfile.gettempdir()) / "openmaas-storage-cache")))
    try:
        max_bytes = int(float(query.pop(CACHE_MB_PARAM, "10240")) * 1024 * 1024)
    except ValueError as exc:
        raise ValueError(f"OPENMAAS_STORAGE_URL {url!r}: cache_mb is not a number") from exc
    options: dict[str, Any] = {}
    endpoint = query.pop(ENDPOINT_PARAM, None)
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    if query:
        raise ValueError(f"OPENMAAS_STORAGE_URL {url!r}: unknown parameters {', '.join(sorted(query))}")
    try:
        import fsspec

        fs = fsspec.filesystem(parts.scheme, **options)
    except (ImportError, ValueError) as exc:
        raise ValueError(
            f"OPENMAAS_STORAGE_URL {url!r}: the {parts.scheme}:// store needs its fsspec backend "
            f"(for s3://, install 'openmaas[cluster]'): {exc}"
        ) from exc
    root = f"{parts.netloc}{parts.path}".rstrip("/")
    if not parts.netloc:
        raise ValueError(f"OPENMAAS_STORAGE_URL {url!r}: name the bucket, e.g. s3://bucket/prefix")
    return RemoteArtifactStore(url, fs, root, ReadCache(cache, max_bytes))
