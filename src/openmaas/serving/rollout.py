"""Updating a deployment (`PATCH /v1/deployments/{name}`): another version, a traffic split or
other settings, put into service without failing a request.

`rolling` (the default) loads the new runtimes beside the old, switches new requests to them once
they are ready, and lets the requests already running finish on the old before it closes. That
needs the memory of both at once: when the serving memory budget cannot hold both, the update is
refused (409 `insufficient_memory`) before anything changes, and the caller may send it again with
`recreate`, which stops the old first — requests answer 503 with Retry-After until the new one is
ready. A deployment that serves nothing (it had failed) simply loads.
"""

from __future__ import annotations

from datetime import datetime

from openmaas.db.database import Database
from openmaas.schemas.serving import DeploymentPublic, DeploymentUpdate
from openmaas.serving import service
from openmaas.serving.replicas import ReplicaManager


def update(
    db: Database,
    replicas: ReplicaManager,
    org_id: str,
    id_or_name: str,
    body: DeploymentUpdate,
    now: datetime,
) -> DeploymentPublic:
    strategy = body.strategy or "rolling"
    with db.session() as session:
        row, before = service.update(session, org_id, id_or_name, body, now)
        loaded = replicas.is_loaded(org_id, row.name)
        if loaded:
            replicas.check_room(session, row, strategy)  # refused: the transaction rolls back
        deployment_id = row.id
    # The replicas act on the committed row (the loader thread reads it).
    if loaded:
        replicas.update(deployment_id, before, strategy)
    else:
        replicas.load(deployment_id)
    with db.read_session() as session:  # as it is now: a recreate serves nothing from here on
        return service.public(session.get_one(service.Deployment, deployment_id), replicas.loaded_version)
