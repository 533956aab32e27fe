"""`/v1/training_jobs`: start training a model on a dataset, and follow, list or cancel the runs.
A finished run registers a model version (see `/v1/registry`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from openmaas.api.deps import CreatorDep, PageDep, PlatformDep, scope
from openmaas.api.routers.jobs import AfterQuery, LimitQuery, StreamQuery, events_response
from openmaas.jobs import service as jobs
from openmaas.jobs.schemas import JobEventList, JobPublic
from openmaas.pagination import Page
from openmaas.registry import training
from openmaas.registry.schemas import TrainingJobCreate
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1", tags=["training"])

TrainWrite = Annotated[Principal, scope("jobs:write")]
JobsRead = Annotated[Principal, scope("jobs:read")]
KIND = training.TRAIN_KIND


@router.post("/training_jobs", status_code=201, response_model=JobPublic, name="training_jobs.create")
def create_training_job(
    body: TrainingJobCreate, platform: PlatformDep, caller: TrainWrite, create: CreatorDep
) -> object:
    caller.require("datasets:read")
    caller.require("models:write")
    return create(
        body,
        lambda session: JobPublic.of(
            training.create_training_job(
                session,
                caller.require_org(),
                body,
                now=platform.clock.now(),
                default_max_attempts=platform.settings.job_max_attempts,
            )
        ),
    )


@router.get("/training_jobs", response_model=Page[JobPublic], name="training_jobs.list")
def list_training_jobs(platform: PlatformDep, caller: JobsRead, page: PageDep) -> object:
    with platform.db.read_session() as session:
        return jobs.list_jobs(
            session, caller.require_org(), kind=KIND, status=None, limit=page.limit, after=page.after
        )


@router.get("/training_jobs/{job_id}", response_model=JobPublic, name="training_jobs.get")
def get_training_job(job_id: str, platform: PlatformDep, caller: JobsRead) -> object:
    with platform.db.read_session() as session:
        return JobPublic.of(jobs.get_job(session, caller.require_org(), job_id, KIND))


@router.post("/training_jobs/{job_id}/cancel", response_model=JobPublic, name="training_jobs.cancel")
def cancel_training_job(job_id: str, platform: PlatformDep, caller: TrainWrite) -> object:
    with platform.db.session() as session:
        job = jobs.cancel_job(session, caller.require_org(), job_id, platform.clock.now(), KIND)
        return JobPublic.of(job)


@router.get("/training_jobs/{job_id}/events", response_model=JobEventList, name="training_jobs.events")
async def training_job_events(
    job_id: str,
    request: Request,
    caller: JobsRead,
    after: AfterQuery = None,
    limit: LimitQuery = 100,
    stream: StreamQuery = False,
) -> object:
    return await events_response(request, caller.require_org(), job_id, after, limit, stream, kind=KIND)
