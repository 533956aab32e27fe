"""Prefixed, time-ordered identifiers (`org_…`, `key_…`).

The body is 26 characters of base32 (lower-case Crockford alphabet, which sorts like the bytes it
encodes) over 6 bytes of millisecond timestamp and 10 random bytes, so ids sort in creation order
to the millisecond: pagination orders by id and needs no second column.
"""

from __future__ import annotations

import base64
import os
import random
import time

# RFC 4648 base32's alphabet (A-Z, 2-7) does not sort like its values; map each symbol to the
# symbol of the same value in an alphabet that does.
# Our own generator, so that code seeding the global one (training does) can't repeat our ids,
# reseeded from the OS in every forked child so that no two processes share a sequence.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)
_ORDERED = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")


def new_id(prefix: str) -> str:
    """A new id such as `org_01jz…`; `prefix` includes its separator (`org_`, `ftjob-`)."""
    # Not os.urandom: a system call releases the GIL, and getting it back behind a busy thread
    # (a batch running, the ledger writing) cost the hot path milliseconds. Ids are not secrets
    # (keys come from `secrets`).
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + _random.getrandbits(80).to_bytes(10, "big")
    return prefix + base64.b32encode(raw)[:26].translate(_ORDERED).decode()
