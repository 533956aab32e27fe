"""Operator routes: organisations, their keys and the platform-wide audit log (`/v1/admin`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from openmaas.api.deps import (
    AuditedTargetOrg,
    CreatorDep,
    Operator,
    PageDep,
    PlatformDep,
    ReadSessionDep,
    TargetOrg,
)
from openmaas.api.responses import JSON_BODY, KEYED, errors
from openmaas.schemas import tenancy as schemas
from openmaas.schemas.pages import Page
from openmaas.tenancy import audit
from openmaas.tenancy import service as tenancy

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=KEYED)


@router.post(
    "/organizations",
    status_code=201,
    response_model=schemas.Organization,
    name="organizations.create",
    responses=errors(*JSON_BODY, 409),
)
def create_organization(
    body: schemas.OrganizationCreate, platform: PlatformDep, _: Operator, create: CreatorDep
) -> object:
    return create(
        body,
        lambda s: tenancy.organization_public(tenancy.create_organization(s, body, platform.clock.now())),
    )


@router.get(
    "/organizations",
    response_model=Page[schemas.Organization],
    name="organizations.list",
    responses=errors(422),
)
def list_organizations(session: ReadSessionDep, _: Operator, page: PageDep) -> object:
    return tenancy.list_organizations(session, limit=page.limit, after=page.after)


@router.get(
    "/organizations/{org_id}",
    response_model=schemas.Organization,
    name="organizations.get",
    responses=errors(404, 422),
)
def get_organization(org_id: str, session: ReadSessionDep, _: Operator) -> object:
    return tenancy.organization_public(tenancy.find_organization(session, org_id))


@router.post(
    "/organizations/{org_id}/api_keys",
    status_code=201,
    response_model=schemas.ApiKeyCreated,
    name="organizations.api_keys.create",
    responses=errors(404, *JSON_BODY, 409),
)
def create_org_key(
    org_id: AuditedTargetOrg,
    body: schemas.ApiKeyCreate,
    platform: PlatformDep,
    operator: Operator,
    create: CreatorDep,
) -> object:
    return create(
        body,
        lambda s: tenancy.create_api_key(
            s,
            platform.hasher,
            org_id=org_id,
            body=body,
            creator_key_id=operator.key_id,
            creator_scopes=operator.scopes,
            now=platform.clock.now(),
        ),
    )


@router.get(
    "/organizations/{org_id}/api_keys",
    response_model=Page[schemas.ApiKey],
    name="organizations.api_keys.list",
    responses=errors(404, 422),
)
def list_org_keys(org_id: TargetOrg, session: ReadSessionDep, _: Operator, page: PageDep) -> object:
    return tenancy.list_api_keys(session, org_id, limit=page.limit, after=page.after)


@router.delete(
    "/organizations/{org_id}/api_keys/{key_id}",
    response_model=schemas.ApiKey,
    name="organizations.api_keys.revoke",
    responses=errors(404, 422),
)
def revoke_org_key(org_id: AuditedTargetOrg, key_id: str, platform: PlatformDep, _: Operator) -> object:
    # Its own transaction: the key leaves the auth cache after the commit, or a request between
    # the two could cache it again, still valid.
    with platform.db.session() as session:
        key = tenancy.api_key_public(tenancy.revoke_api_key(session, org_id, key_id, platform.clock.now()))
    platform.authenticator.forget(key_id)
    return key


@router.get(
    "/audit_log", response_model=Page[schemas.AuditEntry], name="admin.audit_log.list", responses=errors(422)
)
def list_audit_log(
    session: ReadSessionDep,
    _: Operator,
    page: PageDep,
    organization_id: Annotated[str | None, Query(max_length=40)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
) -> object:
    return audit.list_entries(
        session, org_id=organization_id, all_orgs=True, action=action, limit=page.limit, after=page.after
    )
