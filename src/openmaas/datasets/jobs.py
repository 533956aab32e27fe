"""The `validate_dataset` job: run `openmaas.datasets.validate_dataset` on an uploaded version,
store the schema and the problems (with their file, line and column), mark the dataset ready or
failed, and release what waited for it (training jobs in `validating_files`) through the
`release_waiting` the composition root gives `validation_handler`, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.datasets import ValidationReport, validate_dataset
from openmaas.datasets.tables import Dataset, DatasetStatus
from openmaas.jobs import queue
from openmaas.jobs.handlers import JobHandler
from openmaas.jobs.run import JobRun, LeaseLost
from openmaas.jobs.tables import JobStatus

VALIDATE_KIND = "validate_dataset"

# Called with the settled dataset (ready or failed) inside the transaction that settles it.
ReleaseWaiting = Callable[[Session, Dataset, datetime], None]


class ValidationParams(BaseModel):
    """A `validate_dataset` job's parameters."""

    dataset_id: str
    target: str | None = None  # the label column the upload named, checked when given


def validation_handler(release_waiting: ReleaseWaiting) -> JobHandler[ValidationParams]:
    return JobHandler(
        kind=VALIDATE_KIND,
        params=ValidationParams,
        run=partial(run_validation, release_waiting=release_waiting),
    )


def run_validation(run: JobRun[ValidationParams], *, release_waiting: ReleaseWaiting) -> None:
    dataset_id = run.params.dataset_id
    with run.db.read_session() as session:
        dataset = _dataset(session, dataset_id)
        stored = dataset.path
    run.event("log", f"Validating {dataset.name}:{dataset.version} ({dataset.format}).")
    issues: list[dict[str, Any]]
    try:
        with run.store.reading(stored) as path:
            report = validate_dataset(path, target=run.params.target)
        issues, rows, schema = _issues(report), report.rows, report.to_dict()["schema"]
        ok = report.ok
    except errors.OpenMaaSError as exc:
        issues, rows, schema, ok = (
            [{"code": exc.code, "message": exc.message, "severity": "error"}],
            None,
            None,
            False,
        )
    with run.db.session() as session:
        dataset = _dataset(session, dataset_id)
        dataset.status = (DatasetStatus.READY if ok else DatasetStatus.FAILED).value
        dataset.rows, dataset.schema_, dataset.issues = rows, schema, issues
        release_waiting(session, dataset, run.clock.now())
        result = {"dataset_id": dataset_id, "ok": ok, "rows": rows, "issues": len(issues)}
        status = JobStatus.SUCCEEDED if ok else JobStatus.FAILED
        error = None if ok else {"message": _summary(dataset, issues), "code": "dataset_invalid"}
        if not queue.finish(session, run.claim, status, now=run.clock.now(), result=result, error=error):
            raise LeaseLost(run.job_id)


def _dataset(session: Session, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise errors.NotFound(f"Dataset {dataset_id} no longer exists.", param="dataset_id")
    return dataset


def _issues(report: ValidationReport) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = report.to_dict()["issues"]
    return body


def _summary(dataset: Dataset, issues: list[dict[str, Any]]) -> str:
    errors_ = [issue for issue in issues if issue.get("severity") == "error"]
    first = errors_[0]["message"] if errors_ else "unknown problem"
    where = f"{dataset.name}:{dataset.version}"
    return f"Dataset {where} failed validation with {len(errors_)} error(s); first: {first}"
