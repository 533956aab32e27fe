"""What a key may do. A scope is `resource:read`, `resource:write`, `inference`, `admin` or `operator`.

`admin` grants everything inside the key's organisation; `write` implies `read`; `operator` is the
platform operator's, who belongs to no organisation and manages organisations.
"""

from __future__ import annotations

from collections.abc import Iterable

RESOURCES = (
    "api_keys",
    "audit",
    "datasets",
    "models",
    "jobs",
    "deployments",
    "usage",
    "billing",
)
ADMIN = "admin"
OPERATOR = "operator"
INFERENCE = "inference"

TENANT_SCOPES = frozenset(
    {ADMIN, INFERENCE} | {f"{resource}:{action}" for resource in RESOURCES for action in ("read", "write")}
)


def grants(held: Iterable[str], needed: str) -> bool:
    """Does a key holding `held` scopes have `needed`?"""
    held = frozenset(held)
    if needed in held:
        return True
    if needed == OPERATOR:
        return False
    if ADMIN in held:
        return True
    resource, _, action = needed.partition(":")
    return action == "read" and f"{resource}:write" in held


def within(requested: Iterable[str], held: Iterable[str]) -> bool:
    """May a key holding `held` create a key with `requested` scopes (never more than its own)?"""
    held = frozenset(held)
    return all(grants(held, scope) for scope in requested)
