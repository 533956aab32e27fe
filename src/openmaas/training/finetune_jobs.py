"""OpenAI's fine-tuning jobs on our job system: `create_fine_tuning_job` checks the request before
anything is queued (the base is one of the organisation's text-generation versions, the files are
its `fine-tune` files, every example fits the base's context under the base's own tokenizer and
chat template — counted here, at creation, since the base is known only now — and the trained
tokens are estimated), and the `fine_tune` job trains the LoRA adapter (`training.finetune`),
resuming from its latest epoch checkpoint, and registers the adapter as a model version with its
lineage in the transaction that marks the job succeeded.

`fine_tuning_job_public` shapes a job as OpenAI does (`ftjob-…`, statuses, `fine_tuned_model`).
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.billing.price_source import DatabasePriceSource
from openmaas.datasets import files as file_service
from openmaas.datasets.chat_format import count_chat_tokens
from openmaas.ids import new_id
from openmaas.jobs import queue
from openmaas.jobs import service as jobs_service
from openmaas.jobs.handlers import JobHandler
from openmaas.jobs.run import JobRun, JobStopped
from openmaas.jobs.tables import Job, JobEvent
from openmaas.metering.ledger import record_in
from openmaas.metering.settlement import Sql
from openmaas.metering.sources import trained_tokens_usage
from openmaas.registry import service as registry
from openmaas.registry.manifest import FORMAT_VERSION, LORA_ADAPTER, MANIFEST
from openmaas.registry.tables import ModelVersion
from openmaas.schemas.fine_tuning import (
    FineTuningCheckpointPublic,
    FineTuningError,
    FineTuningEventPublic,
    FineTuningJobCreate,
    FineTuningJobPublic,
)
from openmaas.schemas.pages import Page
from openmaas.storage import ArtifactStore
from openmaas.tasks import TEXT_GENERATION
from openmaas.tenancy.tables import Organization
from openmaas.training.finetune_checkpoints import checkpoint_model

FINE_TUNE_KIND = "fine_tune"


class FineTuneParams(BaseModel):
    """A `fine_tune` job's parameters, checked when the job is created."""

    base: str  # the base version's ref as the caller named it (`qwen`, `qwen:2`)
    base_version_id: str
    base_ref: str  # `name:version`
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    hyperparameters: dict[str, Any]  # `schemas.fine_tuning.Hyperparameters`, as checked
    estimated_tokens: int  # answer and prompt tokens of one epoch, at creation
    fine_tuned_model: str  # `ft:<base>:<org>:<suffix>:<job id>`
    model: str  # the registry model the adapter version goes to


def _count_tokens(
    store: ArtifactStore, path: str, version_path: str, manifest: dict[str, Any], param: str
) -> int:
    from openmaas.engine.tokenizer import Tokenizer

    with store.reading(version_path) as base_folder:
        tokenizer = Tokenizer.from_pretrained(base_folder)
    context = int((manifest.get("config") or {}).get("max_position_embeddings") or 2048)
    with store.reading(path) as file_path:
        count = count_chat_tokens(file_path, tokenizer.encode_chat, max_tokens=context)
    if count.issues:
        issues = [
            {"code": i.code, "message": i.message, "line": i.line, "severity": "error"} for i in count.issues
        ]
        lines = ", ".join(str(i.line) for i in count.issues[:10])
        raise errors.InvalidFile(
            f"{len(issues)} example(s) of {param} are longer than the model's context of {context} tokens "
            f"(lines {lines}).",
            issues=issues,
            param=param,
            code="example_too_long",
        )
    return count.tokens


def create_fine_tuning_job(
    session: Session, store: ArtifactStore, org_id: str, body: FineTuningJobCreate, *, now: datetime,
    max_attempts: int,
) -> Job:  # fmt: skip
    model, version = registry.resolve(session, org_id, body.model, param="model")
    if version.task != TEXT_GENERATION or (version.manifest or {}).get("source") != "huggingface":
        raise errors.InvalidRequest(
            f"{model.name}:{version.version} is a {version.task} model; fine-tuning needs an imported "
            "text-generation model (Llama or Qwen2).",
            param="model",
            code="model_not_fine_tunable",
        )
    files = {"training_file": body.training_file, "validation_file": body.validation_file}
    tokens = 0
    for param, file_id in files.items():
        if file_id is None:
            continue
        row = file_service.get_file(session, org_id, file_id, param=param)
        if row.purpose != file_service.FINE_TUNE:
            raise errors.InvalidRequest(
                f"{file_id} has purpose {row.purpose!r}; fine-tuning reads files uploaded with purpose "
                "'fine-tune'.",
                param=param,
            )
        counted = _count_tokens(store, row.path, version.artifact_path, version.manifest or {}, param)
        tokens += counted if param == "training_file" else 0
    hyper = body.resolved_hyperparameters()
    org_name = session.get(Organization, org_id).name  # type: ignore[union-attr]
    job_id = new_id("ftjob-")
    params = FineTuneParams(
        base=body.model,
        base_version_id=version.id,
        base_ref=f"{model.name}:{version.version}",
        training_file=body.training_file,
        validation_file=body.validation_file,
        suffix=body.suffix,
        seed=body.seed if body.seed is not None else int(job_id[-6:], 36) % (2**31),
        hyperparameters=hyper.model_dump(mode="json"),
        estimated_tokens=tokens,
        fine_tuned_model=f"ft:{model.name}:{org_name}:{body.suffix or ''}:{job_id}",
        model=f"{model.name}-{body.suffix or 'ft'}",
    )
    return queue.enqueue(
        session, org_id=org_id, kind=FINE_TUNE_KIND, params=params, now=now, max_attempts=max_attempts,
        job_id=job_id,
    )  # fmt: skip


def _unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def list_fine_tuning_jobs(
    session: Session, org_id: str, *, limit: int, after: str | None
) -> Page[FineTuningJobPublic]:
    """A page of the organisation's fine-tuning jobs, newest first, their rows read in one query."""
    listed = jobs_service.list_jobs(
        session, org_id, kind=FINE_TUNE_KIND, status=None, limit=limit, after=after
    )
    ids = [job.id for job in listed.data]
    rows = {row.id: row for row in session.scalars(select(Job).where(Job.org_id == org_id, Job.id.in_(ids)))}
    return Page[FineTuningJobPublic](
        data=[fine_tuning_job_public(rows[i]) for i in ids if i in rows],
        first_id=listed.first_id,
        last_id=listed.last_id,
        has_more=listed.has_more,
    )


def fine_tuning_job_public(job: Job) -> FineTuningJobPublic:
    params = FineTuneParams.model_validate(job.params)
    result = job.result or {}
    hyper = params.hyperparameters
    shown = {key: hyper[key] for key in ("n_epochs", "batch_size", "learning_rate_multiplier")}
    shown |= result.get("hyperparameters") or {}
    error = None
    if job.error:
        error = FineTuningError(
            code=str(job.error.get("code") or "error"), message=str(job.error.get("message") or ""),
            param=job.error.get("param"),
        )  # fmt: skip
    return FineTuningJobPublic(
        id=job.id,
        created_at=int(job.created_at.timestamp()),
        finished_at=_unix(job.finished_at),
        model=params.base_ref,
        fine_tuned_model=params.fine_tuned_model if job.status == "succeeded" else None,
        organization_id=job.org_id,
        status=job.status,
        training_file=params.training_file,
        validation_file=params.validation_file,
        hyperparameters=shown,
        method={"type": "supervised", "supervised": {"hyperparameters": {**hyper, **shown}}},
        result_files=list(result.get("result_files") or []),
        trained_tokens=result.get("trained_tokens"),
        estimated_tokens=params.estimated_tokens,
        error=error,
        seed=params.seed,
        user_provided_suffix=params.suffix,
    )


EVENT_PREFIX = "ftevent-"


def _event_message(event: JobEvent) -> str:
    data = event.data or {}
    if event.type == "metrics" and "total_steps" in data:
        return f"Step {data['step']}/{data['total_steps']}: training loss={data['train_loss']:.4f}"
    if event.type == "metrics":
        losses = ", ".join(f"{k}={v:.4f}" for k, v in data.items() if k.endswith("loss"))
        return f"Epoch {data.get('epoch')}: {losses}"
    return event.message


def fine_tuning_event_public(event: JobEvent) -> FineTuningEventPublic:
    return FineTuningEventPublic(
        id=f"{EVENT_PREFIX}{event.seq}",
        created_at=int(event.created_at.timestamp()),
        level=event.level,
        message=_event_message(event),
        type="metrics" if event.type == "metrics" else "message",
        data=event.data,
    )


def list_fine_tuning_events(
    session: Session, job: Job, *, after: str | None, limit: int
) -> Page[FineTuningEventPublic]:
    """A job's events newest first, as OpenAI lists them; `after` is the last event id of the
    page before (`ftevent-<n>`)."""
    query = select(JobEvent).where(JobEvent.job_id == job.id)
    if after is not None:
        seq = after.removeprefix(EVENT_PREFIX)
        if not seq.isdigit():
            raise errors.ValidationFailed(f"after must be an event id ({EVENT_PREFIX}…).", param="after")
        query = query.where(JobEvent.seq < int(seq))
    rows = list(session.scalars(query.order_by(JobEvent.seq.desc()).limit(limit + 1)))
    data = [fine_tuning_event_public(row) for row in rows[:limit]]
    return Page[FineTuningEventPublic](
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=len(rows) > limit,
    )


def list_checkpoints(session: Session, job: Job) -> Page[FineTuningCheckpointPublic]:
    """One checkpoint per epoch (newest first), from the job's checkpoint events."""
    params = FineTuneParams.model_validate(job.params)
    rows = session.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job.id, JobEvent.type == "checkpoint")
        .order_by(JobEvent.seq.desc())
    )
    seen: set[int] = set()  # a resumed attempt may write an epoch's checkpoint again
    data = []
    for row in rows:
        info = row.data or {}
        step = int(info.get("step", info.get("epoch", 0)))
        if step in seen:
            continue
        seen.add(step)
        metrics = {k: float(v) for k, v in (info.get("metrics") or {}).items() if isinstance(v, int | float)}
        data.append(
            FineTuningCheckpointPublic(
                id=f"ftckpt-{job.id.removeprefix('ftjob-')}-{step}",
                created_at=int(row.created_at.timestamp()),
                fine_tuned_model_checkpoint=checkpoint_model(params.fine_tuned_model, step),
                fine_tuning_job_id=job.id,
                metrics={**metrics, "step": float(step)},
                step_number=step,
            )
        )
    return Page[FineTuningCheckpointPublic](
        data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )


def run_fine_tune(run: JobRun[FineTuneParams]) -> None:
    """The `fine_tune` job: train (resuming from the latest epoch checkpoint), save the adapter in
    peft's layout, register it as a version of `params.model`, succeed."""
    from openmaas.training.finetune import FineTuneConfig, fine_tune
    from openmaas.training.finetune_checkpoints import AdapterCheckpointContext
    from openmaas.training.loop import TrainingStopped
    from openmaas.training.lora import save_adapter

    params = run.params
    with run.db.read_session() as session:
        base = session.get(ModelVersion, params.base_version_id)
        if base is None or base.org_id != run.org_id:
            raise errors.NotFound(f"The base version {params.base_ref} was deleted.", param="model")
        base_path = base.artifact_path
        stored = {
            name: file_service.get_file(session, run.org_id, file_id, param=name).path
            for name, file_id in (
                ("training_file", params.training_file),
                ("validation_file", params.validation_file),
            )
            if file_id is not None
        }
    hyper = dict(params.hyperparameters)
    config = FineTuneConfig(
        n_epochs=hyper["n_epochs"],
        batch_size=hyper["batch_size"],
        learning_rate_multiplier=hyper["learning_rate_multiplier"],
        lora_rank=hyper["lora_rank"],
        lora_alpha=hyper["lora_alpha"],
        lora_dropout=hyper["lora_dropout"],
        lora_target_modules=tuple(hyper["lora_target_modules"]),
        seed=params.seed,
    )
    epochs = config.n_epochs if isinstance(config.n_epochs, int) else 3
    context = AdapterCheckpointContext(run, epochs, config.resolved(1).lora, params.base_ref)
    run.event("log", f"Fine-tuning {params.base_ref} with LoRA.")
    try:
        with ExitStack() as reading:
            base_folder = reading.enter_context(run.store.reading(base_path))
            paths = {name: reading.enter_context(run.store.reading(path)) for name, path in stored.items()}
            training, validation = paths["training_file"], paths.get("validation_file")
            tuned = fine_tune(base_folder, training, validation, config, context)
    except TrainingStopped as stopped:
        raise JobStopped(str(stopped)) from stopped
    finally:
        context.flush()
    version_id = new_id("mv_")
    relative = run.store.model_dir(run.org_id, version_id)
    try:
        with run.store.staged(relative) as folder:  # published whole, before it is registered
            save_adapter(tuned.model, tuned.config.lora, folder, base_model=params.base_ref)
            manifest = _adapter_manifest(folder, params, tuned)
        results = _step_metrics_csv(run)
        _register(run, version_id, relative, manifest, tuned, params, results)
    except BaseException:
        run.store.remove(relative)  # nothing half-written: no version, no artifact
        raise
    run.event("log", f"Fine-tuned model {params.fine_tuned_model} is ready.")


def _adapter_manifest(folder: Path, params: FineTuneParams, tuned: Any) -> dict[str, Any]:
    files = sorted(p.name for p in folder.iterdir())
    manifest = {
        "format_version": FORMAT_VERSION,
        "task": TEXT_GENERATION,
        "source": LORA_ADAPTER,
        "base_version_id": params.base_version_id,
        "base": params.base_ref,
        "fine_tuned_model": params.fine_tuned_model,
        "adapter": {
            "rank": tuned.config.lora.rank,
            "alpha": tuned.config.lora.alpha,
            "target_modules": sorted(tuned.config.lora.target_modules),
        },
        "files": files,
        "metrics": {k: v for k, v in tuned.metrics.items() if k.endswith("loss")},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def _step_metrics_csv(run: JobRun[FineTuneParams]) -> str:
    """The job's metrics as OpenAI's `step_metrics.csv` result file, in the job's folder: one row
    per step with its training loss, and the epoch's validation loss on its last step."""
    with run.db.read_session() as session:
        rows = session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == run.job_id, JobEvent.type == "metrics")
            .order_by(JobEvent.seq)
        )
        steps: dict[int, dict[str, Any]] = {}
        for event in rows:
            data = event.data or {}
            if "step" in data:
                steps.setdefault(int(data["step"]), {}).update(data)
    lines = ["step,epoch,train_loss,valid_loss"]
    for step, data in sorted(steps.items()):
        valid = data.get("full_valid_loss", "")
        lines.append(f"{step},{data.get('epoch', '')},{data.get('train_loss', '')},{valid}")
    relative = f"{run.store.job_dir(run.job_id)}/step_metrics.csv"
    with run.store.staged(relative) as path:
        path.write_text("\n".join(lines) + "\n")
    return relative


def _register(
    run: JobRun[FineTuneParams], version_id: str, relative: str, manifest: dict[str, Any], tuned: Any,
    params: FineTuneParams, results: str,
) -> None:  # fmt: skip
    with run.db.session() as session, run.store.reading(results) as results_path:
        result_file = file_service.store_output_file(
            session, run.store, org_id=run.org_id, purpose="fine-tune-results", filename="step_metrics.csv",
            source=results_path, now=run.clock.now(),
        )  # fmt: skip
        model, version = registry.register_version(
            session,
            version_id=version_id,
            org_id=run.org_id,
            model_name=params.model,
            artifact_path=relative,
            manifest=manifest,
            lineage={"dataset_id": None, "job_id": run.job_id, "parent_version_id": params.base_version_id},
            now=run.clock.now(),
        )
        from openmaas.training.finetune import BASE_LEARNING_RATE

        _meter_trained_tokens(session, run, tuned.trained_tokens)
        resolved = tuned.config
        run.succeed(
            session,
            {
                "model": model.name,
                "version": version.version,
                "ref": f"{model.name}:{version.version}",
                "model_version_id": version.id,
                "trained_tokens": tuned.trained_tokens,
                "hyperparameters": {
                    "n_epochs": resolved.n_epochs,
                    "batch_size": resolved.batch_size,
                    "learning_rate_multiplier": resolved.learning_rate / BASE_LEARNING_RATE,
                },
                "metrics": manifest["metrics"],
                "resumed_from_epoch": tuned.resumed_from_epoch,
                "result_files": [result_file.id],
            },
        )


def _meter_trained_tokens(session: Session, run: JobRun[FineTuneParams], tokens: int) -> None:
    """Bill the job's trained tokens in the transaction that marks it succeeded: committed with the
    result or not at all, and under the job's own event id, so a retried attempt meters nothing
    more."""
    prices = DatabasePriceSource(run.db, run.clock, ttl=0)
    event = trained_tokens_usage(run.job_id, run.org_id, tokens, run.clock.now(), model=run.params.base_ref)
    record_in(Sql.of(session, run.db), prices, run.clock, event)


FINE_TUNE = JobHandler(
    kind=FINE_TUNE_KIND,
    params=FineTuneParams,
    run=run_fine_tune,
    preload=("openmaas.training.finetune", "openmaas.training.finetune_checkpoints", "torch._dynamo"),
)
