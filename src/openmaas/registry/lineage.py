"""Where a model version came from and what came of it: the dataset it was trained on, the job
that made it, the version it was optimised from, and the versions optimised from it with their
measured figures. A handful of indexed reads, whatever the organisation's size; another
organisation's rows are never named."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.datasets.tables import Dataset
from openmaas.jobs.tables import Job
from openmaas.registry.tables import ModelVersion, RegisteredModel

MAX_CHILDREN = 50


@dataclass(frozen=True)
class DatasetLink:
    id: str
    ref: str | None  # `name:version`; None once the dataset was deleted
    status: str | None


@dataclass(frozen=True)
class JobLink:
    id: str
    kind: str | None  # None once the job is gone
    status: str | None


@dataclass(frozen=True)
class Optimised:
    """A version optimised from another, with what its job measured (the manifest's
    `optimization`: the parent's and the result's size, latency and metrics, and the verdict)."""

    ref: str
    method: str | None
    figures: dict[str, Any]


@dataclass
class VersionLineage:
    dataset: DatasetLink | None
    job: JobLink | None
    parent: str | None  # the ref it was optimised from
    children: list[Optimised] = field(default_factory=list)
    more_children: bool = False


def lineage_of(session: Session, org_id: str, version: ModelVersion) -> VersionLineage:
    dataset = job = None
    if version.dataset_id is not None:
        row = session.get(Dataset, version.dataset_id)
        mine = row is not None and row.org_id == org_id
        dataset = DatasetLink(
            version.dataset_id,
            f"{row.name}:{row.version}" if row is not None and mine else None,
            row.status if row is not None and mine else None,
        )
    if version.job_id is not None:
        found = session.get(Job, version.job_id)
        mine = found is not None and found.org_id == org_id
        job = JobLink(
            version.job_id,
            found.kind if found is not None and mine else None,
            found.status if found is not None and mine else None,
        )
    parent = None
    if version.parent_version_id is not None:
        parent = _refs(session, org_id, ModelVersion.id == version.parent_version_id, 1)
    children = _children(session, org_id, version.id)
    return VersionLineage(
        dataset=dataset,
        job=job,
        parent=parent[0][0] if parent else None,
        children=[Optimised(ref, *_optimisation(manifest)) for ref, manifest in children[:MAX_CHILDREN]],
        more_children=len(children) > MAX_CHILDREN,
    )


def optimisation_of(version: ModelVersion) -> dict[str, Any] | None:
    """The measured figures of an optimised version (None for a trained or imported one)."""
    figures = version.manifest.get("optimization")
    return figures if isinstance(figures, dict) else None


def _optimisation(manifest: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    figures = manifest.get("optimization")
    figures = figures if isinstance(figures, dict) else {}
    method = figures.get("method")
    return (str(method) if method is not None else None), figures


def _children(session: Session, org_id: str, version_id: str) -> list[tuple[str, dict[str, Any]]]:
    return _refs(session, org_id, ModelVersion.parent_version_id == version_id, MAX_CHILDREN + 1)


def _refs(session: Session, org_id: str, where: Any, limit: int) -> list[tuple[str, dict[str, Any]]]:
    rows = session.execute(
        select(RegisteredModel.name, ModelVersion.version, ModelVersion.manifest)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(ModelVersion.org_id == org_id, where)
        .order_by(ModelVersion.id)
        .limit(limit)
    )
    return [(f"{name}:{number}", manifest) for name, number, manifest in rows]
