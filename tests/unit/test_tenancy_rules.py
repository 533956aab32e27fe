"""Scopes, key material, ids and durations: the pure rules under authentication."""

from __future__ import annotations

from datetime import timedelta

import pytest

from openmaas.ids import new_id
from openmaas.schemas.tenancy import parse_duration
from openmaas.tenancy import scopes
from openmaas.tenancy.keys import KeyHasher, generate_key, is_well_formed, redact


def test_admin_grants_everything_in_its_org_but_not_operator() -> None:
    assert scopes.grants({"admin"}, "api_keys:write")
    assert scopes.grants({"admin"}, "audit:read")
    assert not scopes.grants({"admin"}, "operator")


def test_write_implies_read_but_not_the_reverse() -> None:
    assert scopes.grants({"models:write"}, "models:read")
    assert not scopes.grants({"models:read"}, "models:write")
    assert not scopes.grants({"inference"}, "models:read")


def test_a_key_cannot_grant_more_than_it_holds() -> None:
    assert scopes.within(["models:read"], {"models:write"})
    assert not scopes.within(["admin"], {"models:write", "api_keys:write"})


def test_generated_keys_are_well_formed_unique_and_256_bits() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith("om-") and is_well_formed(key)
        assert len(key) == 3 + 43  # 32 random bytes in URL-safe base64
    assert not is_well_formed("om-short")
    assert not is_well_formed("sk-" + "a" * 43)


def test_hash_is_keyed_and_stable() -> None:
    key = generate_key()
    a, b = KeyHasher(b"a" * 32), KeyHasher(b"b" * 32)
    assert a.digest(key) == a.digest(key)
    assert a.digest(key) != b.digest(key)
    assert key not in a.digest(key)
    with pytest.raises(ValueError):
        KeyHasher(b"short")


def test_redaction_hides_the_secret() -> None:
    key = generate_key()
    shown = redact(key)
    assert shown.startswith("om-") and shown.endswith(key[-4:])
    assert len(shown) < 16


def test_ids_are_prefixed_and_time_ordered() -> None:
    import time

    first = new_id("org_")
    time.sleep(0.002)
    second = new_id("org_")
    assert first.startswith("org_") and len(first) == 4 + 26
    assert first < second


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0d", "30", "d30", "3y", "-1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_the_documented_scopes_are_the_ones_granted() -> None:
    """The OpenAPI document lists `schemas.tenancy.TENANT_SCOPES` (the SDK imports no server code)."""
    from openmaas.schemas.tenancy import TENANT_SCOPES
    from openmaas.tenancy import scopes

    assert sorted(TENANT_SCOPES) == sorted(scopes.TENANT_SCOPES)
