"""Organisations and API keys: the operations behind the admin and tenant routes and the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.ids import new_id
from openmaas.pagination import paginate
from openmaas.schemas import tenancy as schemas
from openmaas.schemas.pages import Page
from openmaas.tenancy import scopes as scope_rules
from openmaas.tenancy.keys import KeyHasher, generate_key, redact
from openmaas.tenancy.tables import ApiKey, Organization


def organization_public(org: Organization) -> schemas.Organization:
    return schemas.Organization(
        id=org.id, name=org.name, plan=org.plan, created_at=org.created_at, timezone=org.timezone
    )


def api_key_public(key: ApiKey) -> schemas.ApiKey:
    return schemas.ApiKey(
        id=key.id,
        organization_id=key.org_id,
        name=key.name,
        redacted=key.redacted,
        scopes=list(key.scopes),
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    )


def create_organization(session: Session, body: schemas.OrganizationCreate, now: datetime) -> Organization:
    if session.scalar(select(Organization.id).where(Organization.name == body.name)) is not None:
        raise errors.Conflict(f"An organization named {body.name!r} already exists.", param="name")
    org = Organization(
        id=new_id("org_"), name=body.name, plan=body.plan, created_at=now, timezone=body.timezone
    )
    session.add(org)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create of the same name won the race
        raise errors.Conflict(f"An organization named {body.name!r} already exists.", param="name") from exc
    return org


def get_organization(session: Session, org_id: str) -> Organization:
    org = session.get(Organization, org_id)
    if org is None:
        raise errors.NotFound(f"No organization {org_id!r}.", param="organization_id")
    return org


def find_organization(session: Session, id_or_name: str) -> Organization:
    """By id (`org_…`) or by name: the CLI takes either."""
    org = session.get(Organization, id_or_name) or session.scalar(
        select(Organization).where(Organization.name == id_or_name)
    )
    if org is None:
        raise errors.NotFound(f"No organization {id_or_name!r}.", param="organization")
    return org


def list_organizations(session: Session, *, limit: int, after: str | None) -> Page[schemas.Organization]:
    return paginate(
        session,
        select(Organization),
        Organization.id,
        limit=limit,
        after=after,
        to_public=organization_public,
    )


def create_api_key(
    session: Session,
    hasher: KeyHasher,
    *,
    org_id: str | None,
    body: schemas.ApiKeyCreate,
    creator_key_id: str | None,
    creator_scopes: frozenset[str],
    now: datetime,
) -> schemas.ApiKeyCreated:
    """Create a key in `org_id` (None: an operator key). Scopes never exceed the creator's."""
    requested = body.scopes if body.scopes is not None else _default_scopes(org_id, creator_scopes)
    allowed = {scope_rules.OPERATOR} if org_id is None else scope_rules.TENANT_SCOPES
    unknown = [scope for scope in requested if scope not in allowed]
    if unknown or not requested:
        raise errors.ValidationFailed(
            f"Unknown scope(s) {unknown}; choose from {sorted(allowed)}."
            if unknown
            else "scopes must not be empty.",
            param="scopes",
        )
    if scope_rules.OPERATOR not in creator_scopes and not scope_rules.within(requested, creator_scopes):
        raise errors.PermissionDenied("A key cannot grant scopes its creator does not hold.", param="scopes")
    expires_at = body.expires_at
    if body.expires_in is not None:
        if expires_at is not None:
            raise errors.ValidationFailed("Give expires_at or expires_in, not both.", param="expires_in")
        expires_at = now + schemas.parse_duration(body.expires_in)
    if expires_at is not None and expires_at <= now:
        raise errors.ValidationFailed("expires_at must be in the future.", param="expires_at")
    secret = generate_key()
    key = ApiKey(
        id=new_id("key_"),
        org_id=org_id,
        name=body.name,
        key_hash=hasher.digest(secret),
        redacted=redact(secret),
        scopes=sorted(set(requested)),
        created_at=now,
        created_by=creator_key_id,
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    return schemas.ApiKeyCreated(**api_key_public(key).model_dump(), key=secret)


def _default_scopes(org_id: str | None, creator_scopes: frozenset[str]) -> list[str]:
    if scope_rules.OPERATOR in creator_scopes:
        return [scope_rules.OPERATOR] if org_id is None else [scope_rules.ADMIN]
    return sorted(creator_scopes)


def get_api_key(session: Session, org_id: str | None, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.org_id != org_id:
        raise errors.NotFound(f"No API key {key_id!r}.", param="key_id")
    return key


def list_api_keys(
    session: Session, org_id: str | None, *, limit: int, after: str | None
) -> Page[schemas.ApiKey]:
    query = select(ApiKey).where(ApiKey.org_id == org_id if org_id is not None else ApiKey.org_id.is_(None))
    return paginate(session, query, ApiKey.id, limit=limit, after=after, to_public=api_key_public)


def api_key_names(session: Session, org_id: str, key_ids: Iterable[str | None]) -> dict[str, str]:
    """The names of the organisation's keys among `key_ids` (ids of other organisations' keys
    are left out, as if they did not exist)."""
    ids = sorted({key_id for key_id in key_ids if key_id})
    if not ids:
        return {}
    rows = session.execute(select(ApiKey.id, ApiKey.name).where(ApiKey.org_id == org_id, ApiKey.id.in_(ids)))
    return {key_id: name for key_id, name in rows}


def revoke_api_key(session: Session, org_id: str | None, key_id: str, now: datetime) -> ApiKey:
    key = get_api_key(session, org_id, key_id)
    if key.revoked_at is None:
        key.revoked_at = now
    return key


def ensure_operator_key(session: Session, hasher: KeyHasher, key: str | None, now: datetime) -> str | None:
    """Make sure an operator key exists. Returns a newly generated key (to print once), else None.

    With `key` given (`OPENMAAS_ADMIN_KEY`), that key is registered if it is not already.
    """
    if key is not None:
        digest = hasher.digest(key)
        if session.scalar(select(ApiKey.id).where(ApiKey.key_hash == digest)) is None:
            session.add(_operator_key(digest, redact(key), now))
        return None
    existing = session.scalar(
        select(ApiKey.id).where(ApiKey.org_id.is_(None), ApiKey.revoked_at.is_(None)).limit(1)
    )
    if existing is not None:
        return None
    secret = generate_key()
    session.add(_operator_key(hasher.digest(secret), redact(secret), now))
    return secret


def _operator_key(digest: str, redacted: str, now: datetime) -> ApiKey:
    return ApiKey(
        id=new_id("key_"),
        org_id=None,
        name="operator",
        key_hash=digest,
        redacted=redacted,
        scopes=[scope_rules.OPERATOR],
        created_at=now,
    )
