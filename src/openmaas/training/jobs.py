"""Training jobs: checking a request before anything is queued (task, hyperparameters and
preprocessing through `openmaas.training`'s own validation, so errors name the parameter; the
dataset; the model name), and the `train` job that trains, writes the artifact and registers the
model version with its lineage, in the same transaction that marks the job succeeded.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.datasets import service as dataset_service
from openmaas.datasets.tables import Dataset, DatasetStatus
from openmaas.ids import new_id
from openmaas.jobs import queue
from openmaas.jobs.run import JobRun
from openmaas.jobs.tables import Job, JobStatus
from openmaas.registry import service as registry
from openmaas.schemas.training import TrainingJobCreate
from openmaas.training.config import CONFIGS, config_from_params, parse_task

TRAIN_KIND = "train"


def _params_with_target(task: str, body: TrainingJobCreate) -> dict[str, Any]:
    params = dict(body.params)
    if body.target is not None:
        fields = {field.name for field in dataclasses.fields(CONFIGS[parse_task(task)])}
        if "target" not in fields:
            raise errors.ValidationFailed(f"task {task} takes no target column", param="target")
        params["target"] = body.target
    return params


def _check_columns(dataset: Dataset, params: dict[str, Any], config: Any) -> None:
    """Columns the config names must exist, when validation already knows the columns."""
    columns = {column["name"] for column in (dataset.schema_ or {}).get("columns", [])}
    if not columns:
        return
    for field in ("target", "text_column", "user_column", "item_column", "rating_column"):
        value = getattr(config, field, None)
        if value is not None and value not in columns:
            param = "target" if field == "target" else f"params.{field}"
            raise errors.ValidationFailed(
                f"column {value!r} ({field}) is not in dataset {dataset.name}:{dataset.version}", param=param
            )


def _check_preprocessing(spec: dict[str, Any]) -> None:
    # Imported here: the preprocessing package loads torch, which the API server needs only now.
    from openmaas.datasets.preprocessing import PreprocessingSpec

    PreprocessingSpec.from_dict(spec)


def create_training_job(
    session: Session, org_id: str, body: TrainingJobCreate, *, now: datetime, default_max_attempts: int
) -> Job:
    task = parse_task(body.task).value
    params = _params_with_target(task, body)
    config = config_from_params(task, params)
    _check_preprocessing(body.preprocessing)
    dataset = dataset_service.get_dataset(session, org_id, body.dataset)
    dataset_service.require_trainable(dataset)
    _check_columns(dataset, params, config)
    model_name = body.model or dataset.name
    parent_id = registry.resolve(session, org_id, body.parent, param="parent")[1].id if body.parent else None
    existing = registry.find_model(session, org_id, model_name)
    if existing is not None and existing.task != task:
        raise errors.Conflict(
            f"Model {model_name!r} holds {existing.task} models, not {task}.", param="model"
        )
    ready = dataset.status == DatasetStatus.READY.value
    job_params = {
        "task": task,
        "dataset_id": dataset.id,
        "dataset": f"{dataset.name}:{dataset.version}",
        "params": params,
        "preprocessing": body.preprocessing,
        "model": model_name,
        "parent_version_id": parent_id,
        "epochs": int(config.epochs),
    }
    return queue.enqueue(
        session,
        org_id=org_id,
        kind=TRAIN_KIND,
        params=job_params,
        now=now,
        max_attempts=body.max_attempts or default_max_attempts,
        status=JobStatus.QUEUED if ready else JobStatus.VALIDATING_FILES,
    )


def run_training(run: JobRun) -> None:
    """The `train` job: train (resuming from the latest checkpoint), write, register, succeed."""
    # torch and the trainers load only in job processes, never in the API server.
    from openmaas.registry.artifact import write_artifact
    from openmaas.training.train import train

    params = run.params
    with run.db.read_session() as session:
        dataset = dataset_service.get_dataset(session, run.org_id, str(params["dataset_id"]))
        dataset_service.require_trainable(dataset)
        path = run.store.path(dataset.path)
    context = run.training_context(int(params.get("epochs", 0)))
    run.event("log", f"Training {params['task']} on {params['dataset']}.")
    try:
        trained = train(params["task"], path, params["params"], params["preprocessing"], context)
    finally:
        context.flush()
    version_id = new_id("mv_")
    relative = run.store.model_dir(run.org_id, version_id)
    manifest = write_artifact(trained, run.store.path(relative))
    try:
        ref = register_and_succeed(
            run,
            version_id,
            relative,
            manifest,
            dataset_id=str(params["dataset_id"]),
            parent_version_id=params.get("parent_version_id"),
            result={"resumed_from_epoch": context.resumed_from or 0},
        )
    except BaseException:
        run.store.remove(relative)  # nothing half-written: no version, no artifact
        raise
    run.event("log", f"Registered model version {ref}.", {"ref": ref})


def register_and_succeed(
    run: JobRun,
    version_id: str,
    relative: str,
    manifest: dict[str, Any],
    *,
    dataset_id: str | None,
    parent_version_id: str | None,
    result: dict[str, Any],
) -> str:
    """Register the job's version with its lineage and end the job `succeeded`, in one
    transaction; the job's result is `result` plus the version's ref, id and metrics."""
    with run.db.session() as session:
        model, version = registry.register_version(
            session,
            version_id=version_id,
            org_id=run.org_id,
            model_name=str(run.params["model"]),
            artifact_path=relative,
            manifest=manifest,
            lineage={"dataset_id": dataset_id, "job_id": run.job_id, "parent_version_id": parent_version_id},
            now=run.clock.now(),
        )
        ref = f"{model.name}:{version.version}"
        identity = {
            "model": model.name,
            "version": version.version,
            "ref": ref,
            "model_version_id": version.id,
        }
        run.succeed(session, {**identity, "metrics": version.metrics, **result})
    return ref
