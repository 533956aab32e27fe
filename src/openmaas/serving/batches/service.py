"""Batches as their owner sees them: create one from a `batch` file (its lines checked first; a
batch whose lines have problems is created `failed`, each problem named by line, as OpenAI does),
retrieve, list and cancel. `runner.py` runs them. Knows nothing of HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.datasets.files import get_file
from openmaas.ids import new_id
from openmaas.pagination import paginate
from openmaas.schemas.batches import BatchCreate, BatchError, BatchErrors, BatchPublic, BatchRequestCounts
from openmaas.schemas.pages import Page
from openmaas.serving.batches.lines import BatchInput, Problem, read_input
from openmaas.serving.batches.tables import Batch
from openmaas.serving.replicas import ReplicaManager
from openmaas.storage import ArtifactStore
from openmaas.tasks import SENTENCE_EMBEDDING, TEXT_GENERATION

WINDOWS = {"24h": timedelta(hours=24)}
_TASKS = {
    "/v1/chat/completions": TEXT_GENERATION,
    "/v1/completions": TEXT_GENERATION,
    "/v1/embeddings": SENTENCE_EMBEDDING,
}


def create_batch(
    session: Session,
    store: ArtifactStore,
    replicas: ReplicaManager,
    *,
    org_id: str,
    api_key_id: str | None,
    body: BatchCreate,
    now: datetime,
) -> Batch:
    """A batch of the organisation's `batch` file: `validating` (the runner takes it from there),
    or `failed` with the problems of its lines."""
    stored = get_file(session, org_id, body.input_file_id, param="input_file_id")
    if stored.purpose != "batch":
        raise errors.InvalidRequest(
            f"File {stored.id!r} has purpose {stored.purpose!r}; a batch reads a file uploaded with "
            "purpose 'batch'.",
            param="input_file_id",
        )
    with store.reading(stored.path) as local:
        checked = read_input(local, body.endpoint)
    if not checked.problems:
        checked.problems.extend(_model_problems(replicas, org_id, body.endpoint, checked))
    row = Batch(
        id=new_id("batch_"),
        org_id=org_id,
        api_key_id=api_key_id,
        endpoint=body.endpoint,
        input_file_id=body.input_file_id,
        completion_window=body.completion_window,
        model=checked.model,
        status="failed" if checked.problems else "validating",
        meta=body.metadata,
        errors=[p.to_json() for p in checked.problems] or None,
        total=0 if checked.problems else len(checked.requests),
        completed=0,
        failed=0,
        created_at=now,
        expires_at=now + WINDOWS[body.completion_window],
        failed_at=now if checked.problems else None,
    )
    session.add(row)
    session.flush()
    return row


def _model_problems(
    replicas: ReplicaManager, org_id: str, endpoint: str, checked: BatchInput
) -> list[Problem]:
    """The lines' model must be one the caller can call, of the endpoint's kind."""
    model, line = checked.model, checked.requests[0].line
    assert model is not None
    served = replicas.acquire_loaded(org_id, model)
    if served is None:
        missing = replicas.missing_model(org_id, model)  # 503 while it loads: callable soon
        if isinstance(missing, errors.NotFound):
            return [
                Problem(
                    line, "model_not_found", f"Line {line}: the model {model!r} does not exist.", "body.model"
                )
            ]
        return []
    if served.runtime is not None and served.runtime.task != _TASKS[endpoint]:
        message = f"Line {line}: the model {model!r} serves {served.runtime.task}, not {endpoint}."
        return [Problem(line, "invalid_model", message, "body.model")]
    return []


def get_batch(session: Session, org_id: str, batch_id: str) -> Batch:
    """The organisation's batch; another organisation's answers 404 like a missing one."""
    row = session.scalar(select(Batch).where(Batch.org_id == org_id, Batch.id == batch_id))
    if row is None:
        raise errors.NotFound(f"No such batch: {batch_id!r}.", param="batch_id")
    return row


def list_batches(session: Session, org_id: str, *, limit: int, after: str | None) -> Page[BatchPublic]:
    query = select(Batch).where(Batch.org_id == org_id)
    return paginate(session, query, Batch.id, limit=limit, after=after, to_public=batch_public)


def cancel_batch(session: Session, org_id: str, batch_id: str, *, now: datetime) -> Batch:
    """Ask the batch to stop: its runner sends no new line, keeps the answered ones in the output
    and ends it `cancelled`. Cancelling twice is harmless; an ended batch answers 409."""
    row = get_batch(session, org_id, batch_id)
    if row.status in ("cancelling", "cancelled"):
        return row
    if row.status not in ("validating", "in_progress"):
        raise errors.Conflict(
            f"Batch {batch_id!r} is {row.status}; it cannot be cancelled.", param="batch_id"
        )
    row.status, row.cancelling_at = "cancelling", now
    session.flush()
    return row


def _unix(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def batch_public(row: Batch) -> BatchPublic:
    problems = row.errors
    return BatchPublic(
        id=row.id,
        endpoint=row.endpoint,
        model=row.model,
        errors=BatchErrors(data=[BatchError.model_validate(p) for p in problems]) if problems else None,
        input_file_id=row.input_file_id,
        completion_window=row.completion_window,
        status=row.status,  # type: ignore[arg-type]
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        created_at=int(row.created_at.timestamp()),
        in_progress_at=_unix(row.in_progress_at),
        expires_at=_unix(row.expires_at),
        finalizing_at=_unix(row.finalizing_at),
        completed_at=_unix(row.completed_at),
        failed_at=_unix(row.failed_at),
        expired_at=_unix(row.expired_at),
        cancelling_at=_unix(row.cancelling_at),
        cancelled_at=_unix(row.cancelled_at),
        request_counts=BatchRequestCounts(total=row.total, completed=row.completed, failed=row.failed),
        metadata=row.meta,
    )
