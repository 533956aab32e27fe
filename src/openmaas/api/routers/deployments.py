"""Deployments: serve a registered model version under a name (`/v1/deployments`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from openmaas.api.deps import CreatorDep, PageDep, PlatformDep, ReadSessionDep, scope
from openmaas.api.responses import JSON_BODY, KEYED, errors
from openmaas.schemas.pages import Page
from openmaas.schemas.serving import (
    DeploymentCreate,
    DeploymentEventPublic,
    DeploymentPublic,
    DeploymentUpdate,
)
from openmaas.serving import rollout, service
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1/deployments", tags=["deployments"], responses=KEYED)

Read = Annotated[Principal, scope("deployments:read")]
Write = Annotated[Principal, scope("deployments:write")]


@router.post(
    "",
    status_code=201,
    response_model=DeploymentPublic,
    name="deployments.create",
    responses=errors(*JSON_BODY, 404, 409),
)
def create_deployment(
    body: DeploymentCreate, platform: PlatformDep, caller: Write, create: CreatorDep
) -> DeploymentPublic:
    org_id = caller.require_org()
    platform.replicas.require_placement(body.placement)
    created = create.created(
        body, lambda s: service.create(s, org_id, body, platform.clock.now()), DeploymentPublic
    )
    platform.replicas.load(created.id)  # a replayed create finds it loaded
    return created


@router.get("", response_model=Page[DeploymentPublic], name="deployments.list", responses=errors(422))
def list_deployments(session: ReadSessionDep, platform: PlatformDep, caller: Read, page: PageDep) -> object:
    return service.list_page(
        session,
        caller.require_org(),
        limit=page.limit,
        after=page.after,
        loaded=platform.replicas.loaded_version,
    )


@router.get(
    "/{deployment}", response_model=DeploymentPublic, name="deployments.get", responses=errors(404, 422)
)
def get_deployment(deployment: str, session: ReadSessionDep, platform: PlatformDep, caller: Read) -> object:
    return service.public(
        service.get(session, caller.require_org(), deployment), platform.replicas.loaded_version
    )


# Update, stop and delete keep their own transaction: the replicas act on the committed row (the
# loader thread reads it), after the commit and before the response (update: in serving.rollout).


@router.patch(
    "/{deployment}",
    response_model=DeploymentPublic,
    name="deployments.update",
    responses=errors(*JSON_BODY, 404, 409),
)
def update_deployment(
    deployment: str, body: DeploymentUpdate, platform: PlatformDep, caller: Write
) -> object:
    """Serve another version or settings: by default the new version starts beside the old and takes
    new requests once ready while running ones finish on the old (409 `insufficient_memory` when
    both do not fit: send `"strategy": "recreate"` to stop the old first)."""
    org_id = caller.require_org()
    with platform.deployment_sync.local_change(org_id, deployment):  # rolled here, not again by the sync
        return rollout.update(platform.db, platform.replicas, org_id, deployment, body, platform.clock.now())


@router.get(
    "/{deployment}/events",
    response_model=Page[DeploymentEventPublic],
    name="deployments.events",
    responses=errors(404, 422),
)
def deployment_events(deployment: str, session: ReadSessionDep, caller: Read, page: PageDep) -> object:
    return service.events(session, caller.require_org(), deployment, limit=page.limit, after=page.after)


@router.post(
    "/{deployment}/stop",
    response_model=DeploymentPublic,
    name="deployments.stop",
    responses=errors(404, 409, 422),
)
def stop_deployment(deployment: str, platform: PlatformDep, caller: Write) -> object:
    org_id = caller.require_org()
    with platform.db.session() as session:
        stopped = service.stop(session, org_id, deployment, platform.clock.now())
    platform.replicas.unload(org_id, stopped.name)
    return stopped


@router.delete(
    "/{deployment}",
    response_model=DeploymentPublic,
    name="deployments.delete",
    responses=errors(404, 409, 422),
)
def delete_deployment(deployment: str, platform: PlatformDep, caller: Write) -> object:
    org_id = caller.require_org()
    with platform.db.session() as session:
        deleted = service.delete(session, org_id, deployment)
    platform.replicas.unload(org_id, deleted.name)
    return deleted
