"""Prefixed, time-ordered identifiers (`org_…`, `key_…`).

The body is 26 characters of base32 (lower-case Crockford alphabet, which sorts like the bytes it
encodes) over 6 bytes of millisecond timestamp and 10 random bytes, so ids sort in creation order
to the millisecond: pagination orders by id and needs no second column. Within one process they
sort in creation order exactly: an id made in the same millisecond as the one before takes that
one's random part plus one (as monotonic ULIDs do), so two events a process records within a
millisecond (a deployment's "switched" then "draining") list in the order they happened.
"""

from __future__ import annotations

import os
import random
import threading
import time

# Our own generator, so that code seeding the global one (training does) can't repeat our ids,
# reseeded from the OS in every forked child so that no two processes share a sequence.
_random = random.Random()
_lock = threading.Lock()
_last = [0, 0]  # this process's last id: its milliseconds and random part


def _after_fork() -> None:
    global _lock
    _random.seed()
    _lock = threading.Lock()  # another thread may have held it at the fork
    _last[:] = [0, 0]  # the parent's next id may be its last + 1: the child starts afresh


os.register_at_fork(after_in_child=_after_fork)
# Base32 in the lower-case Crockford alphabet, which sorts like the values it encodes, ten bits
# (two symbols) at a time: `base64.b32encode` is pure Python and cost ~13 µs an id.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = range(120, -1, -10)


def new_id(prefix: str) -> str:
    """A new id such as `org_01jz…`; `prefix` includes its separator (`org_`, `ftjob-`)."""
    # Not os.urandom: a system call releases the GIL, and getting it back behind a busy thread
    # (a batch running, the ledger writing) cost the hot path milliseconds. Ids are not secrets
    # (keys come from `secrets`).
    # 128 bits (48 of milliseconds, 80 random) and 2 zero bits: 26 symbols of 5 bits. A fresh random
    # part has its top bit clear, so counting up within a millisecond never carries out of 80 bits.
    millis = time.time_ns() // 1_000_000 & (1 << 48) - 1
    with _lock:
        bits = _last[1] + 1 if millis == _last[0] else _random.getrandbits(79)
        _last[0], _last[1] = millis, bits
    value = (millis << 82) | (bits << 2)
    pairs = _PAIRS
    return prefix + "".join([pairs[value >> shift & 1023] for shift in _SHIFTS])
