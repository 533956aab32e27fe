"""Streamed content hashing: a dataset version is identified by the sha256 of its bytes.

Reads in fixed-size chunks so a file of any size is hashed in constant memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

CHUNK_SIZE = 1 << 20


def sha256_file(path: Path | str, chunk_size: int = CHUNK_SIZE) -> str:
    """Return the hex sha256 of the file at `path`, reading it in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    """Return the hex sha256 of the concatenation of `chunks`."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()
