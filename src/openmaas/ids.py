"""Prefixed, time-ordered identifiers (`org_…`, `key_…`).

The body is 10 characters of millisecond timestamp and 16 of randomness in Crockford base32, so ids
sort in creation order: pagination orders by id and needs no second column.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new id such as `org_01jz…`; `prefix` includes its separator (`org_`, `ftjob-`)."""
    millis = time.time_ns() // 1_000_000
    return prefix + _base32(millis, 10) + _base32(secrets.randbits(80), 16)
