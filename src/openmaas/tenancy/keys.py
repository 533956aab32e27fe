"""API key material: generation, format checks and the keyed hash that is all we store.

An HMAC-SHA256 under a server secret is enough for 256-bit random keys (no guessing to slow down),
and costs microseconds, so authenticating every request stays cheap.
"""

from __future__ import annotations

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

    def digest(self, key: str) -> str:
        # The one-shot HMAC (OpenSSL's, in C): a third of `hmac.new(...).hexdigest()`'s cost, per request.
        return hmac.digest(self._secret, key.encode(), "sha256").hex()


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
