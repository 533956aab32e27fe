"""`/v1/fine_tuning/jobs`, as OpenAI shapes it: create a LoRA fine-tuning job of an imported
model on `fine-tune` files, list, retrieve, cancel, pause and resume it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from openmaas.api.deps import CreatorDep, PageDep, PlatformDep, ReadSessionDep, SessionDep, scope
from openmaas.api.responses import JSON_BODY, KEYED, errors
from openmaas.jobs import service as jobs
from openmaas.schemas.fine_tuning import (
    FineTuningCheckpointPublic,
    FineTuningEventPublic,
    FineTuningJobCreate,
    FineTuningJobPublic,
)
from openmaas.schemas.pages import Page
from openmaas.tenancy.auth import Principal
from openmaas.training import finetune_jobs
from openmaas.training.finetune_jobs import FINE_TUNE_KIND, fine_tuning_job_public

router = APIRouter(prefix="/v1/fine_tuning", tags=["fine-tuning"], responses=KEYED)

JobsRead = Annotated[Principal, scope("jobs:read")]
JobsWrite = Annotated[Principal, scope("jobs:write")]


@router.post(
    "/jobs",
    response_model=FineTuningJobPublic,
    name="fine_tuning.jobs.create",
    responses=errors(*JSON_BODY, 402, 404, 409),
)
def create_job(
    body: FineTuningJobCreate, platform: PlatformDep, caller: JobsWrite, create: CreatorDep
) -> object:
    caller.require("datasets:read")
    caller.require("models:write")
    platform.job_compute.check_budget(caller.require_org())  # 402 when no compute can be paid for
    return create(
        body,
        lambda session: fine_tuning_job_public(
            finetune_jobs.create_fine_tuning_job(
                session,
                platform.store,
                caller.require_org(),
                body,
                now=platform.clock.now(),
                max_attempts=platform.settings.job_max_attempts,
            )
        ),
        status=200,  # OpenAI answers a create with 200
    )


@router.get(
    "/jobs", response_model=Page[FineTuningJobPublic], name="fine_tuning.jobs.list", responses=errors(422)
)
def list_jobs(session: ReadSessionDep, caller: JobsRead, page: PageDep) -> object:
    return finetune_jobs.list_fine_tuning_jobs(
        session, caller.require_org(), limit=page.limit, after=page.after
    )


@router.get(
    "/jobs/{job_id}", response_model=FineTuningJobPublic, name="fine_tuning.jobs.get", responses=errors(404)
)
def get_job(job_id: str, session: ReadSessionDep, caller: JobsRead) -> object:
    return fine_tuning_job_public(jobs.get_job(session, caller.require_org(), job_id, kind=FINE_TUNE_KIND))


@router.post(
    "/jobs/{job_id}/cancel", response_model=FineTuningJobPublic, name="fine_tuning.jobs.cancel",
    responses=errors(404, 409),
)  # fmt: skip
def cancel_job(job_id: str, session: SessionDep, platform: PlatformDep, caller: JobsWrite) -> object:
    org = caller.require_org()
    return fine_tuning_job_public(
        jobs.cancel_job(session, org, job_id, platform.clock.now(), kind=FINE_TUNE_KIND)
    )


@router.post(
    "/jobs/{job_id}/pause", response_model=FineTuningJobPublic, name="fine_tuning.jobs.pause",
    responses=errors(404, 409),
)  # fmt: skip
def pause_job(job_id: str, session: SessionDep, platform: PlatformDep, caller: JobsWrite) -> object:
    org = caller.require_org()
    jobs.get_job(session, org, job_id, kind=FINE_TUNE_KIND)
    return fine_tuning_job_public(jobs.pause_job(session, org, job_id, platform.clock.now()))


@router.post(
    "/jobs/{job_id}/resume", response_model=FineTuningJobPublic, name="fine_tuning.jobs.resume",
    responses=errors(404, 409),
)  # fmt: skip
def resume_job(job_id: str, session: SessionDep, platform: PlatformDep, caller: JobsWrite) -> object:
    org = caller.require_org()
    jobs.get_job(session, org, job_id, kind=FINE_TUNE_KIND)
    return fine_tuning_job_public(jobs.resume_job(session, org, job_id, platform.clock.now()))


@router.get(
    "/jobs/{job_id}/events",
    response_model=Page[FineTuningEventPublic],
    name="fine_tuning.jobs.events",
    responses=errors(404, 422),
)
def list_events(job_id: str, session: ReadSessionDep, caller: JobsRead, page: PageDep) -> object:
    """Newest first: status changes, log lines, and metrics (`train_loss` per step, validation
    loss per epoch)."""
    job = jobs.get_job(session, caller.require_org(), job_id, kind=FINE_TUNE_KIND)
    return finetune_jobs.list_fine_tuning_events(session, job, after=page.after, limit=page.limit)


@router.get(
    "/jobs/{job_id}/checkpoints",
    response_model=Page[FineTuningCheckpointPublic],
    name="fine_tuning.jobs.checkpoints",
    responses=errors(404, 422),
)
def list_checkpoints(job_id: str, session: ReadSessionDep, caller: JobsRead) -> object:
    """One per epoch, with its step number and metrics."""
    job = jobs.get_job(session, caller.require_org(), job_id, kind=FINE_TUNE_KIND)
    return finetune_jobs.list_checkpoints(session, job)
