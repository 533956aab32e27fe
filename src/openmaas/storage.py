"""The artifact store: where dataset files, job checkpoints and logs, and model artifacts live.

Services see the `ArtifactStore` protocol: paths relative to the store's root (the database keeps
those, so the store can move) and the local `Path` of one to read or write. `LocalArtifactStore`
is a folder: under `OPENMAAS_HOME` by default, in cluster mode a shared filesystem every worker
mounts. `open_store` chooses the store from `OPENMAAS_STORAGE_URL`; an fsspec URL (s3://…) is
the seam cluster mode will fill, and is refused until then, never replaced by a local folder.

Nothing here knows what is stored: checkpoints belong to training, artifacts to the registry.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from openmaas import errors

FILE_SCHEME = "file://"


class ArtifactStore(Protocol):
    @property
    def url(self) -> str:
        """What another process passes to `open_store` to reach this same store."""
        ...

    def path(self, relative: str) -> Path:
        """The local path of a stored relative path; refuses anything outside the store."""
        ...

    def dataset_dir(self, org_id: str, dataset_id: str) -> str: ...

    def model_dir(self, org_id: str, version_id: str) -> str: ...

    def job_dir(self, job_id: str) -> str: ...

    def remove(self, relative: str) -> None:
        """Remove a stored file or folder and everything under it (gone already: nothing to do)."""
        ...


class LocalArtifactStore:
    """The store as a folder of the local (or a mounted, shared) filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def url(self) -> str:
        return str(self.root)

    def path(self, relative: str) -> Path:
        resolved = (self.root / relative).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ValueError(f"{relative!r} is outside the artifact store")
        return resolved

    def dataset_dir(self, org_id: str, dataset_id: str) -> str:
        return f"datasets/{org_id}/{dataset_id}"

    def model_dir(self, org_id: str, version_id: str) -> str:
        return f"models/{org_id}/{version_id}"

    def job_dir(self, job_id: str) -> str:
        return f"jobs/{job_id}"

    def remove(self, relative: str) -> None:
        shutil.rmtree(self.path(relative), ignore_errors=True)


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


def open_store(url: str) -> ArtifactStore:
    """The store at `url`: a folder, as a path or a `file://` URL. Other URLs (fsspec's s3://…,
    for cluster mode) are not supported yet and raise ValueError."""
    folder = url.removeprefix(FILE_SCHEME)
    if "://" in folder:
        raise ValueError(
            f"OPENMAAS_STORAGE_URL {url!r}: only a local or mounted folder (a path or a file:// URL) "
            "is supported as the artifact store; fsspec URLs such as s3://… are not implemented yet"
        )
    return LocalArtifactStore(Path(folder))
