"""What still uses a model version, so that deleting it is refused instead of breaking a user of it.

A version is in use while an alias of its model points to it, while a live marketplace listing
sells it, while a deployment (of any state, stopped included: it can be restarted) serves it, or
while it is part of a deployment's traffic split. Withdrawn listings and deleted deployments do
not count. A deployment of another organisation (a buyer's, through a listing) is not named: the
seller learns only that one exists.

Only reads: the caller decides what to refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.billing.tables import Listing
from openmaas.registry.tables import ModelAlias, ModelVersion
from openmaas.serving.tables import Deployment


@dataclass
class Users:
    """Who uses one version; empty when it can go."""

    aliases: list[str] = field(default_factory=list)
    listings: list[str] = field(default_factory=list)  # live listing ids
    deployments: list[str] = field(default_factory=list)  # the owner's deployments serving it
    splits: list[str] = field(default_factory=list)  # the owner's deployments whose split holds it
    foreign_deployments: int = 0  # other organisations' deployments serving it (through a listing)

    def __bool__(self) -> bool:
        return bool(
            self.aliases or self.listings or self.deployments or self.splits or self.foreign_deployments
        )

    def describe(self) -> str:
        parts = []
        if self.aliases:
            parts.append(f"aliased as {', '.join(self.aliases)}")
        if self.listings:
            parts.append(f"listed on the marketplace as {', '.join(self.listings)}")
        if self.deployments:
            parts.append(f"served by deployment(s) {', '.join(map(repr, self.deployments))}")
        if self.splits:
            parts.append(f"in the traffic split of deployment(s) {', '.join(map(repr, self.splits))}")
        if self.foreign_deployments:
            parts.append(
                f"deployed by {self.foreign_deployments} buyer deployment(s) through the marketplace"
            )
        return "; ".join(parts)


def users_of(session: Session, version: ModelVersion) -> Users:
    users = Users()
    users.aliases = sorted(
        session.scalars(
            select(ModelAlias.alias).where(
                ModelAlias.model_id == version.model_id, ModelAlias.version_id == version.id
            )
        )
    )
    users.listings = sorted(
        session.scalars(select(Listing.id).where(Listing.model == version.id, Listing.withdrawn_at.is_(None)))
    )
    for name, org_id in session.execute(
        select(Deployment.name, Deployment.org_id).where(Deployment.version_id == version.id)
    ):
        if org_id == version.org_id:
            users.deployments.append(name)
        else:
            users.foreign_deployments += 1
    users.deployments.sort()
    # A split holds only its own organisation's versions (serving/traffic.py resolves them so).
    for name, config in session.execute(
        select(Deployment.name, Deployment.config).where(Deployment.org_id == version.org_id)
    ):
        entries = (config or {}).get("traffic") or ()
        if name not in users.deployments and any(e.get("version_id") == version.id for e in entries):
            users.splits.append(name)
    users.splits.sort()
    return users
