"""A tenant's own account: who am I, its API keys and its audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from openmaas.api.deps import CreatorDep, PageDep, PlatformDep, PrincipalDep, ReadSessionDep, scope
from openmaas.api.responses import JSON_BODY, KEYED, errors
from openmaas.schemas import tenancy as schemas
from openmaas.schemas.pages import Page
from openmaas.tenancy import audit
from openmaas.tenancy import service as tenancy
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1", tags=["account"], responses=KEYED)

KeysRead = Annotated[Principal, scope("api_keys:read")]
KeysWrite = Annotated[Principal, scope("api_keys:write")]
AuditRead = Annotated[Principal, scope("audit:read")]


@router.get("/me", response_model=schemas.Caller, name="me.get")
def whoami(session: ReadSessionDep, principal: PrincipalDep) -> object:
    org = None
    if principal.org_id is not None:
        org = tenancy.organization_public(tenancy.get_organization(session, principal.org_id))
    return schemas.Caller(key_id=principal.key_id, organization=org, scopes=sorted(principal.scopes))


@router.post(
    "/api_keys",
    status_code=201,
    response_model=schemas.ApiKeyCreated,
    name="api_keys.create",
    responses=errors(*JSON_BODY, 409),
)
def create_key(
    body: schemas.ApiKeyCreate, platform: PlatformDep, caller: KeysWrite, create: CreatorDep
) -> object:
    return create(
        body,
        lambda s: tenancy.create_api_key(
            s,
            platform.hasher,
            org_id=caller.org_id,
            body=body,
            creator_key_id=caller.key_id,
            creator_scopes=caller.scopes,
            now=platform.clock.now(),
        ),
    )


@router.get("/api_keys", response_model=Page[schemas.ApiKey], name="api_keys.list", responses=errors(422))
def list_keys(session: ReadSessionDep, caller: KeysRead, page: PageDep) -> object:
    return tenancy.list_api_keys(session, caller.org_id, limit=page.limit, after=page.after)


@router.get(
    "/api_keys/{key_id}", response_model=schemas.ApiKey, name="api_keys.get", responses=errors(404, 422)
)
def get_key(key_id: str, session: ReadSessionDep, caller: KeysRead) -> object:
    return tenancy.api_key_public(tenancy.get_api_key(session, caller.org_id, key_id))


@router.delete(
    "/api_keys/{key_id}", response_model=schemas.ApiKey, name="api_keys.revoke", responses=errors(404, 422)
)
def revoke_key(key_id: str, platform: PlatformDep, caller: KeysWrite) -> object:
    # Its own transaction: the key leaves the auth cache after the commit, or a request between
    # the two could cache it again, still valid.
    with platform.db.session() as session:
        key = tenancy.api_key_public(
            tenancy.revoke_api_key(session, caller.org_id, key_id, platform.clock.now())
        )
    platform.authenticator.forget(key_id)
    return key


@router.get(
    "/audit_log", response_model=Page[schemas.AuditEntry], name="audit_log.list", responses=errors(422)
)
def list_audit_log(
    session: ReadSessionDep,
    caller: AuditRead,
    page: PageDep,
    action: Annotated[str | None, Query(max_length=100)] = None,
) -> object:
    return audit.list_entries(
        session, org_id=caller.org_id, all_orgs=False, action=action, limit=page.limit, after=page.after
    )
