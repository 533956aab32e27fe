"""Ids: 26 symbols of ordered base32 over (milliseconds, random bits), sorting in creation order."""

from __future__ import annotations

import base64
import random
import threading
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


def test_ids_made_within_one_millisecond_keep_their_order_across_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same millisecond: each id the one before plus one, whichever thread makes it; a new
    millisecond starts from fresh random bits."""
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_700_000_000_000 * 1_000_000)
    made: list[list[str]] = [[] for _ in range(4)]

    def make(mine: list[str]) -> None:
        for _ in range(2000):
            mine.append(ids.new_id("dev_"))

    threads = [threading.Thread(target=make, args=(mine,)) for mine in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(i for mine in made for i in mine)
    assert len(set(every)) == 8000
    assert all(mine == sorted(mine) for mine in made)  # each thread's in the order it made them
    sequential = [ids.new_id("dev_") for _ in range(1000)]
    assert sequential == sorted(sequential) and sequential[0] > every[-1]
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_700_000_000_001 * 1_000_000)
    assert ids.new_id("dev_") > sequential[-1]
