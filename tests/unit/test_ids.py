"""Ids: 26 symbols of ordered base32 over (milliseconds, random bits), sorting in creation order."""

from __future__ import annotations

import base64
import random
import time

import pytest

from openmaas import ids

# RFC 4648 base32, re-lettered into the ordered alphabet: the reference the fast encoder must match.
_ORDERED = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")


def test_ids_are_ordered_base32_of_time_and_random_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    for _ in range(500):
        millis, bits = rng.getrandbits(48), rng.getrandbits(80)
        monkeypatch.setattr(ids.time, "time_ns", lambda m=millis: m * 1_000_000)
        monkeypatch.setattr(ids._random, "getrandbits", lambda n, b=bits: b)
        raw = millis.to_bytes(6, "big") + bits.to_bytes(10, "big")
        assert ids.new_id("req_") == "req_" + base64.b32encode(raw)[:26].translate(_ORDERED).decode()


def test_ids_sort_in_creation_order_and_differ() -> None:
    first = [ids.new_id("org_") for _ in range(100)]
    time.sleep(0.002)
    later = ids.new_id("org_")
    assert len(set(first)) == 100
    assert all(len(i) == 30 and set(i[4:]) <= set("0123456789abcdefghjkmnpqrstvwxyz") for i in first)
    assert max(first) < later
