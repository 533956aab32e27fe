"""Prefixed, time-ordered identifiers (`org_…`, `key_…`).

The body is 26 characters of base32 (lower-case Crockford alphabet, which sorts like the bytes it
encodes) over 6 bytes of millisecond timestamp and 10 random bytes, so ids sort in creation order
to the millisecond: pagination orders by id and needs no second column.
"""

from __future__ import annotations

import base64
import os
import time

# RFC 4648 base32's alphabet (A-Z, 2-7) does not sort like its values; map each symbol to the
# symbol of the same value in an alphabet that does.
_ORDERED = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")


def new_id(prefix: str) -> str:
    """A new id such as `org_01jz…`; `prefix` includes its separator (`org_`, `ftjob-`)."""
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10)
    return prefix + base64.b32encode(raw)[:26].translate(_ORDERED).decode()
