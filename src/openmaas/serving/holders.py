"""Serving's answer to the registry's "who holds this model version" (`registry.in_use`).

A deployment (of any state, stopped included: it can be restarted) holds the version it serves,
and a deployment's traffic split holds the versions in it; deleted deployments do not count. A
deployment of another organisation (a buyer's, through a marketplace listing) is not named: the
seller learns only that one exists. Only reads.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.registry.tables import ModelVersion
from openmaas.serving.deployment_config import DeploymentConfig
from openmaas.serving.tables import Deployment


def deployments_holding(session: Session, version: ModelVersion) -> list[str]:
    """The owner's deployments serving `version`, those whose traffic split holds it, and how many
    other organisations' deployments serve it."""
    serving: list[str] = []
    foreign = 0
    for name, org_id in session.execute(
        select(Deployment.name, Deployment.org_id).where(Deployment.version_id == version.id)
    ):
        if org_id == version.org_id:
            serving.append(name)
        else:
            foreign += 1
    serving.sort()
    # A split holds only its own organisation's versions (serving/traffic.py resolves them so).
    splits = []
    for name, config in session.execute(
        select(Deployment.name, Deployment.config).where(Deployment.org_id == version.org_id)
    ):
        routes = DeploymentConfig.from_stored(config).traffic
        if name not in serving and any(route.version_id == version.id for route in routes):
            splits.append(name)
    splits.sort()
    phrases = []
    if serving:
        phrases.append(f"served by deployment(s) {', '.join(map(repr, serving))}")
    if splits:
        phrases.append(f"in the traffic split of deployment(s) {', '.join(map(repr, splits))}")
    if foreign:
        phrases.append(f"deployed by {foreign} buyer deployment(s) through the marketplace")
    return phrases
