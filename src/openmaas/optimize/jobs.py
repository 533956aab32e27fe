"""The `optimize` job: checking a request before anything is queued, and the job that builds the
optimised model, measures it and its parent side by side, refuses it when its test metric drops
more than allowed (unless forced), and registers it as a new version of the parent's model.

Nothing is left behind on failure: the result is built in a staging folder that becomes the
version's artifact only when the version is registered and the job succeeds in one transaction.
What an attempt killed outright leaves goes at the next attempt's start (see staging.py).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.datasets import service as dataset_service
from openmaas.ids import new_id
from openmaas.jobs import queue
from openmaas.jobs.handlers import JobHandler
from openmaas.jobs.run import JobRun, JobStopped
from openmaas.jobs.tables import Job
from openmaas.optimize import staging
from openmaas.optimize.methods import check_fits, parse_method
from openmaas.registry import service as registry
from openmaas.registry.tables import ModelVersion
from openmaas.schemas.optimize import OptimizationCreate
from openmaas.training.jobs import register_and_succeed

OPTIMIZE_KIND = "optimize"
STAGES = ("prepare", "measure-parent", "export", "quantize", "calibrate", "prune", "measure", "register")


class OptimizationParams(BaseModel):
    """An `optimize` job's parameters, checked when the job is created."""

    model: str  # the parent's model: the result becomes its next version
    parent: str  # the parent's `name:version`, for messages and the result
    parent_version_id: str
    method: str  # a name `methods.parse_method` accepted
    max_metric_drop: float
    force: bool


def create_optimization_job(
    session: Session,
    org_id: str,
    body: OptimizationCreate,
    *,
    now: datetime,
    default_max_drop: float,
    default_max_attempts: int,
) -> Job:
    method = parse_method(body.method)
    model, version = registry.resolve(session, org_id, body.model)
    described = version.manifest.get("architecture")  # imports describe it as a plain string
    architecture = str(described.get("name") if isinstance(described, dict) else described)
    check_fits(version.task, architecture, method, force=body.force)
    if version.manifest.get("runtime"):
        raise errors.ValidationFailed(
            f"{model.name}:{version.version} is already an optimised {version.manifest['runtime']} "
            "version; optimise the trained version it came from",
            param="model",
            code="not_optimizable",
        )
    if version.dataset_id is None:
        raise errors.ValidationFailed(
            f"{model.name}:{version.version} has no dataset in its lineage to measure on", param="model"
        )
    dataset_service.get_dataset(session, org_id, version.dataset_id)
    params = OptimizationParams(
        model=model.name,
        parent=f"{model.name}:{version.version}",
        parent_version_id=version.id,
        method=method.name,
        max_metric_drop=default_max_drop if body.max_metric_drop is None else body.max_metric_drop,
        force=body.force,
    )
    return queue.enqueue(
        session,
        org_id=org_id,
        kind=OPTIMIZE_KIND,
        params=params,
        now=now,
        max_attempts=body.max_attempts or default_max_attempts,
    )


def stage(run: JobRun[OptimizationParams], name: str, message: str) -> None:
    """A progress event: which stage the job is in, of how many it may pass through. A job asked
    to stop (cancelled, paused, its worker gone) stops here; the build's staging folder goes."""
    if run.should_stop():
        raise JobStopped(run.job_id)
    run.event("progress", message, {"stage": name, "step": STAGES.index(name) + 1, "total": len(STAGES)})


def run_optimization(run: JobRun[OptimizationParams]) -> None:
    """The `optimize` job: build, measure, judge, register, succeed."""
    # torch, onnx and onnxruntime load only in job processes, never in the API server.
    from openmaas.optimize.build import build_optimized

    params = run.params
    with run.db.read_session() as session:
        parent = session.get(ModelVersion, params.parent_version_id)
        if parent is None or parent.org_id != run.org_id:
            raise errors.NotFound(f"No model version {params.parent!r}.", param="model")
        dataset = dataset_service.get_dataset(session, run.org_id, str(parent.dataset_id))
        parent_artifact, stored_dataset = parent.artifact_path, dataset.path
        dataset_id = dataset.id
    # A killed earlier attempt (SIGKILL: no cleanup of its own) may have left its staging, and
    # other jobs no longer running theirs.
    staging.remove_stale(run.db, run.store, run.clock.now(), retrying=run.job_id)
    run.store.clear_abandoned()
    version_id = new_id("mv_")
    relative = run.store.model_dir(run.org_id, version_id)
    try:
        staging.mark(run.store, run.job_id, version_id)
        with (
            run.store.reading(parent_artifact) as parent_folder,
            run.store.reading(stored_dataset) as dataset_path,
            run.store.staged(relative) as dest,
        ):
            manifest = build_optimized(
                parent_folder,
                dataset_path,
                dest,
                staging_root=dest.parent,  # the staged folder's scratch: renamed into it
                method=parse_method(params.method),
                max_drop=params.max_metric_drop,
                force=params.force,
                progress=lambda name, message: stage(run, name, message),
                parent_ref=params.parent,
            )
        stage(run, "register", "Registering the optimised version.")
        optimization = manifest["optimization"]
        ref = register_and_succeed(
            run,
            version_id,
            relative,
            manifest,
            model_name=params.model,
            dataset_id=dataset_id,
            parent_version_id=params.parent_version_id,
            result={
                "parent": params.parent,
                "method": params.method,
                "comparison": {k: optimization[k] for k in ("parent", "result", "metric_change")},
            },
        )
    except BaseException:
        run.store.remove(relative)
        raise
    finally:
        staging.finish(run.store, run.job_id, version_id)
    run.event("log", f"Registered model version {ref}.", {"ref": ref})


OPTIMIZE = JobHandler(kind=OPTIMIZE_KIND, params=OptimizationParams, run=run_optimization)
