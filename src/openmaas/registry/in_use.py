"""What still uses a model version, so that deleting it is refused instead of breaking a user of it.

A version is in use while an alias of its model points to it, or while a holder outside the
registry says it holds it. The holders are given by the composition root (the registry sits below
the packages that hold versions and must not import them): billing's live marketplace listings,
serving's deployments and traffic splits. Each answers in its own words, one phrase per way it
holds the version, and the answer lists them in the holders' order.

Only reads: the caller decides what to refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.registry.tables import ModelAlias, ModelVersion


class VersionHolder(Protocol):
    def __call__(self, session: Session, version: ModelVersion) -> list[str]:
        """How this holder uses `version`, one phrase per way (`served by deployment(s) 'api'`);
        empty when it does not. Only reads."""
        ...


@dataclass
class Users:
    """Who uses one version; empty when it can go."""

    aliases: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # the holders' phrases, in their order

    def __bool__(self) -> bool:
        return bool(self.aliases or self.held)

    def describe(self) -> str:
        aliased = [f"aliased as {', '.join(self.aliases)}"] if self.aliases else []
        return "; ".join(aliased + self.held)


def users_of(session: Session, version: ModelVersion, holders: Sequence[VersionHolder]) -> Users:
    aliases = session.scalars(
        select(ModelAlias.alias).where(
            ModelAlias.model_id == version.model_id, ModelAlias.version_id == version.id
        )
    )
    return Users(sorted(aliases), [phrase for holder in holders for phrase in holder(session, version)])
