"""API key material: generation, format checks and the keyed hash that is all we store.

An HMAC-SHA256 under a server secret is enough for 256-bit random keys (no guessing to slow down),
and costs microseconds, so authenticating every request stays cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

KEY_PREFIX = "om-"
_KEY_RE = re.compile(r"^om-[A-Za-z0-9_-]{43}$")


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def is_well_formed(key: str) -> bool:
    return _KEY_RE.match(key) is not None


def redact(key: str) -> str:
    return f"{key[:7]}…{key[-4:]}"


class KeyHasher:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the key-hashing secret must be at least 32 bytes")
        self._secret = secret
        self._tag_key = hashlib.blake2b(secret, digest_size=32, person=b"openmaas-cache").digest()

    def digest(self, key: str) -> str:
        """The key's HMAC-SHA256 under the server secret: what the database stores and looks up.

        Not `hmac.digest`: that one-shot form releases the GIL, and taking it back behind a busy
        batcher or ledger thread cost requests milliseconds."""
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def tag(self, key: str) -> bytes:
        """A keyed BLAKE2b of the key: the in-memory cache's index (a MAC, like `digest`, at a third
        of its cost, paid on every request)."""
        return hashlib.blake2b(key.encode(), key=self._tag_key, digest_size=32).digest()


def load_or_create_secret(path: Path) -> bytes:
    """The server secret from `path`, created (mode 0600) on first start."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex() + "\n")
    return secret
