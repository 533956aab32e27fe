"""Dataset versions: register an ingested upload (deduplicated by content hash, validated by a
job), find them by reference, list them. The bytes live in the artifact store; ingesting and
validating them is `openmaas.datasets`' work.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.datasets import IngestedFile
from openmaas.datasets.jobs import VALIDATE_KIND, ValidationParams
from openmaas.datasets.refs import parse_dataset_ref
from openmaas.datasets.tables import Dataset, DatasetStatus
from openmaas.jobs import queue
from openmaas.pagination import paginate
from openmaas.schemas.datasets import DatasetPublic
from openmaas.schemas.pages import Page
from openmaas.schemas.registry import NAME_PATTERN


def dataset_public(row: Dataset) -> DatasetPublic:
    return DatasetPublic(
        id=row.id,
        name=row.name,
        version=row.version,
        filename=row.filename,
        format=row.format,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        status=row.status,
        validation_job_id=row.validation_job_id,
        rows=row.rows,
        schema=row.schema_,
        issues=row.issues or [],
        created_at=row.created_at,
    )


def check_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise errors.ValidationFailed(
            "name must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
            param="name",
        )
    return name


def find_same_bytes(session: Session, org_id: str, name: str, sha256: str) -> Dataset | None:
    return session.scalar(
        select(Dataset).where(Dataset.org_id == org_id, Dataset.name == name, Dataset.sha256 == sha256)
    )


def register_upload(
    session: Session,
    *,
    dataset_id: str,
    org_id: str,
    name: str,
    filename: str | None,
    ingested: IngestedFile,
    path: str,
    target: str | None,
    now: datetime,
    max_attempts: int,
) -> Dataset:
    """Record a new dataset version and queue its validation job in the same transaction."""
    latest = session.scalar(
        select(func.max(Dataset.version)).where(Dataset.org_id == org_id, Dataset.name == name)
    )
    job = queue.enqueue(
        session,
        org_id=org_id,
        kind=VALIDATE_KIND,
        params=ValidationParams(dataset_id=dataset_id, target=target),
        now=now,
        max_attempts=max_attempts,
    )
    dataset = Dataset(
        id=dataset_id,
        org_id=org_id,
        name=name,
        version=(latest or 0) + 1,
        filename=filename,
        format=ingested.format.value,
        sha256=ingested.sha256,
        size_bytes=ingested.size_bytes,
        path=path,
        status=DatasetStatus.VALIDATING.value,
        validation_job_id=job.id,
        created_at=now,
    )
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, org_id: str, ref: str, param: str = "dataset") -> Dataset:
    """A dataset version by id, `name` (the latest version) or `name:version`."""
    parsed = parse_dataset_ref(ref, param)
    query = select(Dataset).where(Dataset.org_id == org_id)
    if parsed.id is not None:
        query = query.where(Dataset.id == parsed.id)
    else:
        query = query.where(Dataset.name == parsed.name)
        if parsed.version is not None:
            query = query.where(Dataset.version == parsed.version)
    dataset = session.scalar(query.order_by(Dataset.version.desc()).limit(1))
    if dataset is None:
        raise errors.NotFound(f"No dataset {ref!r}.", param=param)
    return dataset


def list_datasets(
    session: Session, org_id: str, *, name: str | None, limit: int, after: str | None
) -> Page[DatasetPublic]:
    query = select(Dataset).where(Dataset.org_id == org_id)
    if name is not None:
        query = query.where(Dataset.name == name)
    return paginate(session, query, Dataset.id, limit=limit, after=after, to_public=dataset_public)


# The model versions (`name:version`) whose lineage names a dataset, at most `limit`: the
# registry's answer, passed in (the registry sits above datasets).
LineageUsers = Callable[[Session, str, str, int], list[str]]


def delete_dataset(session: Session, org_id: str, ref: str, users_of: LineageUsers) -> DatasetPublic:
    """Delete a dataset version nothing depends on; returns it.

    409 `dataset_in_use` while its validation runs (the job would write to it) or while a model
    version names it in its lineage (optimising that version measures on it); nothing is deleted
    then. The caller removes its folder (`store.dataset_dir`) once the row is gone for good."""
    dataset = get_dataset(session, org_id, ref)
    where = f"{dataset.name}:{dataset.version}"
    if dataset.status == DatasetStatus.VALIDATING.value:
        raise errors.Conflict(
            f"Dataset {where} is being validated; delete it once validation ends.",
            param="dataset",
            code="dataset_in_use",
        )
    users = users_of(session, org_id, dataset.id, 6)
    if users:
        more = " and more" if len(users) > 5 else ""
        raise errors.Conflict(
            f"Dataset {where} is in the lineage of model versions {', '.join(users[:5])}{more}; "
            "delete those first.",
            param="dataset",
            code="dataset_in_use",
        )
    public = dataset_public(dataset)
    session.delete(dataset)
    session.flush()
    return public


def require_trainable(dataset: Dataset) -> None:
    if dataset.status == DatasetStatus.FAILED.value:
        problems = "; ".join(issue.get("message", "") for issue in (dataset.issues or [])[:3])
        raise errors.Conflict(
            f"Dataset {dataset.name}:{dataset.version} failed validation and cannot be trained on: "
            f"{problems}",
            param="dataset",
            code="dataset_invalid",
        )
