"""Training jobs: checking a request before anything is queued (task, hyperparameters and
preprocessing through `openmaas.training`'s own validation, so errors name the parameter; the
dataset; the model name), and the `train` job that trains, writes the artifact and registers the
model version with its lineage, in the same transaction that marks the job succeeded.

A job whose dataset is still being validated waits (`validating_files`) until the
`validate_dataset` job calls `release_waiting_jobs` (handed to it by the composition root).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.datasets import service as dataset_service
from openmaas.datasets.tables import Dataset, DatasetStatus
from openmaas.ids import new_id
from openmaas.jobs import queue
from openmaas.jobs.handlers import JobHandler
from openmaas.jobs.run import JobRun, JobStopped
from openmaas.jobs.tables import Job, JobStatus
from openmaas.registry import service as registry
from openmaas.schemas.training import TrainingJobCreate
from openmaas.tasks import Task
from openmaas.training.config import CONFIGS, CommonConfig, config_from_params, parse_task

if TYPE_CHECKING:
    from openmaas.training.result import TrainedModel

TRAIN_KIND = "train"


class TrainingParams(BaseModel):
    """A `train` job's parameters, checked when the job is created."""

    task: Task
    dataset_id: str
    dataset: str  # `name:version`, for messages
    params: dict[str, Any]  # the task's hyperparameters, as `training.config` checked them
    preprocessing: dict[str, Any]  # a `PreprocessingSpec`, as it checked it
    model: str  # the registry name the trained version goes to
    parent_version_id: str | None = None
    epochs: int
    # Data-parallel training on the Ray executor (`training.distributed`); 1: in the job process.
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


# The task families whose trainer runs data-parallel (`workers` > 1).
DATA_PARALLEL_TASKS = (Task.TABULAR_CLASSIFICATION, Task.TABULAR_REGRESSION)


def _check_workers(task: Task, body: TrainingJobCreate, executor: str) -> None:
    if body.workers == 1:
        if body.gpus_per_worker and executor != "ray":
            raise errors.ValidationFailed(
                "gpus_per_worker needs the ray executor (OPENMAAS_EXECUTOR=ray)", param="gpus_per_worker"
            )
        return
    if task not in DATA_PARALLEL_TASKS:
        names = ", ".join(t.value for t in DATA_PARALLEL_TASKS)
        raise errors.ValidationFailed(
            f"task {task} trains on one worker; workers > 1 is for {names}", param="workers"
        )
    if executor != "ray":
        raise errors.ValidationFailed(
            "workers > 1 trains data-parallel on a Ray cluster: it needs the ray executor "
            "(OPENMAAS_EXECUTOR=ray); this platform runs jobs locally",
            param="workers",
        )


def _params_with_target(task: Task, body: TrainingJobCreate) -> dict[str, Any]:
    params = dict(body.params)
    if body.target is not None:
        if "target" not in {field.name for field in dataclasses.fields(CONFIGS[task])}:
            raise errors.ValidationFailed(f"task {task} takes no target column", param="target")
        params["target"] = body.target
    return params


def _check_columns(dataset: Dataset, config: CommonConfig) -> None:
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
    session: Session,
    org_id: str,
    body: TrainingJobCreate,
    *,
    now: datetime,
    default_max_attempts: int,
    executor: str = "local",
) -> Job:
    task = parse_task(body.task)
    _check_workers(task, body, executor)
    params = _params_with_target(task, body)
    config = config_from_params(task, params)
    _check_preprocessing(body.preprocessing)
    dataset = dataset_service.get_dataset(session, org_id, body.dataset)
    dataset_service.require_trainable(dataset)
    _check_columns(dataset, config)
    model_name = body.model or dataset.name
    parent_id = registry.resolve(session, org_id, body.parent, param="parent")[1].id if body.parent else None
    existing = registry.find_model(session, org_id, model_name)
    if existing is not None and existing.task != task:
        raise errors.Conflict(
            f"Model {model_name!r} holds {existing.task} models, not {task}.", param="model"
        )
    job_params = TrainingParams(
        task=task,
        dataset_id=dataset.id,
        dataset=f"{dataset.name}:{dataset.version}",
        params=params,
        preprocessing=body.preprocessing,
        model=model_name,
        parent_version_id=parent_id,
        epochs=config.epochs,
        workers=body.workers,
        cpus_per_worker=body.cpus_per_worker,
        gpus_per_worker=body.gpus_per_worker,
    )
    ready = dataset.status == DatasetStatus.READY.value
    return queue.enqueue(
        session,
        org_id=org_id,
        kind=TRAIN_KIND,
        params=job_params,
        now=now,
        max_attempts=body.max_attempts or default_max_attempts,
        status=JobStatus.QUEUED if ready else JobStatus.VALIDATING_FILES,
    )


def release_waiting_jobs(session: Session, dataset: Dataset, now: datetime) -> None:
    """Queue the training jobs that waited for this dataset's validation, or fail them if it
    failed; in the transaction of the `validate_dataset` job that settles the dataset."""
    waiting = session.scalars(
        select(Job).where(
            Job.org_id == dataset.org_id,
            Job.kind == TRAIN_KIND,
            Job.status == JobStatus.VALIDATING_FILES.value,
        )
    ).all()
    for job in waiting:
        if TrainingParams.model_validate(job.params).dataset_id != dataset.id:
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


def run_training(run: JobRun[TrainingParams]) -> None:
    """The `train` job: train (resuming from the latest checkpoint), write, register, succeed."""
    # torch and the trainers load only in job processes, never in the API server.
    from openmaas.training.job_context import JobTrainingContext
    from openmaas.training.loop import TrainingStopped
    from openmaas.training.train import train

    params = run.params
    with run.db.read_session() as session:
        dataset = dataset_service.get_dataset(session, run.org_id, params.dataset_id)
        dataset_service.require_trainable(dataset)
        dataset_path = dataset.path
    if params.workers > 1:
        from openmaas.training.distributed import train_data_parallel

        train_data_parallel(run, dataset_path)
        return
    context = JobTrainingContext(run, params.epochs)
    run.event("log", f"Training {params.task} on {params.dataset}.")
    try:
        with run.store.reading(dataset_path) as path:
            trained = train(params.task, path, params.params, params.preprocessing, context)
    except TrainingStopped as stopped:
        raise JobStopped(str(stopped)) from stopped
    finally:
        context.flush()
    finish_training(run, trained, context.resumed_from or 0)


def finish_training(run: JobRun[TrainingParams], trained: TrainedModel, resumed_from: int) -> None:
    """Write the trained model's artifact, register its version and end the job `succeeded`."""
    from openmaas.training.artifact import write_artifact

    params = run.params
    version_id = new_id("mv_")
    relative = run.store.model_dir(run.org_id, version_id)
    try:
        with run.store.staged(relative) as folder:
            manifest = write_artifact(trained, folder)
        ref = register_and_succeed(
            run,
            version_id,
            relative,
            manifest,
            model_name=params.model,
            dataset_id=params.dataset_id,
            parent_version_id=params.parent_version_id,
            result={"resumed_from_epoch": resumed_from},
        )
    except BaseException:
        run.store.remove(relative)  # nothing half-written: no version, no artifact
        raise
    run.event("log", f"Registered model version {ref}.", {"ref": ref})


def register_and_succeed(
    run: JobRun[Any],
    version_id: str,
    relative: str,
    manifest: dict[str, Any],
    *,
    model_name: str,
    dataset_id: str | None,
    parent_version_id: str | None,
    result: dict[str, Any],
) -> str:
    """Register the job's version of `model_name` with its lineage and end the job `succeeded`,
    in one transaction; the job's result is `result` plus the version's ref, id and metrics."""
    with run.db.session() as session:
        model, version = registry.register_version(
            session,
            version_id=version_id,
            org_id=run.org_id,
            model_name=model_name,
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


TRAIN = JobHandler(
    kind=TRAIN_KIND,
    params=TrainingParams,
    run=run_training,
    # Building an AdamW imports torch._dynamo (seconds): once in the forkserver, not in every job.
    preload=(
        "openmaas.training.artifact",
        "openmaas.training.train",
        "openmaas.training.job_context",
        "sklearn.metrics",  # imported by training/metrics.py on first use
        "torch._dynamo",
    ),
)
