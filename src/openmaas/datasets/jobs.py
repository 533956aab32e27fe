"""The `validate_dataset` job: run `openmaas.datasets.validate_dataset` on an uploaded version,
store the schema and the problems (with their file, line and column), mark the dataset ready or
failed, and release or fail the training jobs that waited for it (`validating_files`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.datasets import ValidationReport, validate_dataset
from openmaas.datasets.tables import Dataset, DatasetStatus
from openmaas.jobs import queue
from openmaas.jobs.run import JobRun, LeaseLost
from openmaas.jobs.tables import Job, JobStatus
from openmaas.training.jobs import TRAIN_KIND


def run_validation(run: JobRun) -> None:
    dataset_id = str(run.params["dataset_id"])
    with run.db.read_session() as session:
        dataset = _dataset(session, dataset_id)
        path = run.store.path(dataset.path)
    run.event("log", f"Validating {dataset.name}:{dataset.version} ({dataset.format}).")
    issues: list[dict[str, Any]]
    try:
        report = validate_dataset(path, target=run.params.get("target"))
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
        release_waiting_jobs(session, dataset, run.clock.now())
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


def release_waiting_jobs(session: Session, dataset: Dataset, now: datetime) -> None:
    """Queue the training jobs that waited for this dataset, or fail them if it is invalid."""
    waiting = session.scalars(
        select(Job).where(
            Job.org_id == dataset.org_id,
            Job.kind == TRAIN_KIND,
            Job.status == JobStatus.VALIDATING_FILES.value,
        )
    ).all()
    for job in waiting:
        if job.params.get("dataset_id") != dataset.id:
            continue
        if dataset.status == DatasetStatus.READY.value:
            queue.set_status(session, job, JobStatus.QUEUED, now, "Dataset validated; job queued.")
        else:
            job.error = {
                "message": f"Dataset {dataset.name}:{dataset.version} failed validation.",
                "param": "dataset",
                "code": "dataset_invalid",
            }
            queue.set_status(session, job, JobStatus.FAILED, now, "Dataset failed validation; job failed.")
