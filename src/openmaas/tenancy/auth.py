"""Authentication of `Authorization: Bearer om-…` keys, cheap enough for every request.

A hit in the in-process cache costs one HMAC and a dict lookup. Entries live `ttl` seconds, so a
key revoked on another server stops working within `ttl`; a revocation on this server evicts the
entry at once. `last_used_at` is written on cache misses at most once a minute per key, never on
the hot path.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from openmaas import errors
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.tenancy import scopes as scope_rules
from openmaas.tenancy.keys import KeyHasher, is_well_formed
from openmaas.tenancy.tables import ApiKey

_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    org_id: str | None
    scopes: frozenset[str]
    expires_at: datetime | None

    def require(self, scope: str) -> None:
        if not scope_rules.grants(self.scopes, scope):
            raise errors.PermissionDenied(f"This key lacks the {scope!r} scope.")

    def require_org(self) -> str:
        """The caller's organisation; operator keys have none and may not call tenant routes."""
        if self.org_id is None:
            raise errors.PermissionDenied("Operator keys manage the platform; use an organization's key.")
        return self.org_id


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal | None  # None: revoked (kept so a flood of bad tries stays off the DB)
    loaded_at: float


class Authenticator:
    def __init__(
        self, db: Database, hasher: KeyHasher, clock: Clock, *, ttl: float, max_entries: int
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._clock = clock
        self._ttl = ttl
        self._max_entries = max_entries
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()  # by the key's `tag`

    def cached(self, authorization: str | None) -> Principal | None:
        """The principal from the cache alone (no I/O), or None if a database lookup is needed.

        Raises for requests that need no lookup to reject (missing or malformed keys, known-revoked).
        """
        key = _bearer_key(authorization)
        entry = self._cache.get(self._hasher.tag(key))
        if entry is None or self._clock.monotonic() - entry.loaded_at > self._ttl:
            return None
        return self._check(entry.principal)

    def authenticate(self, authorization: str | None) -> Principal:
        """Cache first, then the database. Blocking: call it off the event loop on a miss."""
        principal = self.cached(authorization)
        if principal is not None:
            return principal
        key = _bearer_key(authorization)
        entry = _Entry(self._load(self._hasher.digest(key)), self._clock.monotonic())
        tag = self._hasher.tag(key)
        self._cache[tag] = entry
        self._cache.move_to_end(tag)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return self._check(entry.principal)

    def forget(self, key_id: str) -> None:
        """Evict a key (after revocation) so the next request re-reads it."""
        for tag, entry in list(self._cache.items()):
            if entry.principal is not None and entry.principal.key_id == key_id:
                del self._cache[tag]

    def _check(self, principal: Principal | None) -> Principal:
        if principal is None:
            raise errors.AuthenticationFailed("Invalid API key: unknown or revoked.")
        if principal.expires_at is not None and principal.expires_at <= self._clock.now():
            raise errors.AuthenticationFailed("This API key has expired.", code="expired_api_key")
        return principal

    def _load(self, digest: str) -> Principal | None:
        now = self._clock.now()
        with self._db.read_session() as session:
            key = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
            if key is None or key.revoked_at is not None:
                return None
            principal = Principal(key.id, key.org_id, frozenset(key.scopes), key.expires_at)
            stale = key.last_used_at is None or now - key.last_used_at >= _LAST_USED_RESOLUTION
        if stale:
            with self._db.session() as session:
                session.execute(update(ApiKey).where(ApiKey.id == principal.key_id).values(last_used_at=now))
        return principal


def _bearer_key(authorization: str | None) -> str:
    if not authorization:
        raise errors.AuthenticationFailed(
            "Missing API key: send 'Authorization: Bearer om-…'.", code="missing_api_key"
        )
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not is_well_formed(key):
        raise errors.AuthenticationFailed(
            "Malformed API key: expected 'Authorization: Bearer om-…'.", code="malformed_api_key"
        )
    return key
