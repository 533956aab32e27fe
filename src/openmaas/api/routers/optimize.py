"""`/v1/optimizations`: optimise a model version (ONNX export, int8 quantisation, pruning) in a
job that registers the measured result as a new version; follow, list or cancel the runs. The
result and its parent are compared with `/v1/registry/compare` or the version's manifest."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from openmaas.api.deps import CreatorDep, PageDep, PlatformDep, scope
from openmaas.api.routers.jobs import AfterQuery, LimitQuery, StreamQuery, events_response
from openmaas.jobs import service as jobs
from openmaas.jobs.schemas import JobEventList, JobPublic
from openmaas.optimize import job as optimize
from openmaas.optimize.schemas import OptimizationCreate
from openmaas.pagination import Page
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1", tags=["optimizations"])

JobsWrite = Annotated[Principal, scope("jobs:write")]
JobsRead = Annotated[Principal, scope("jobs:read")]
KIND = optimize.OPTIMIZE_KIND


@router.post("/optimizations", status_code=201, response_model=JobPublic, name="optimizations.create")
def create_optimization(
    body: OptimizationCreate, platform: PlatformDep, caller: JobsWrite, create: CreatorDep
) -> object:
    caller.require("models:write")
    return create(
        body,
        lambda session: JobPublic.of(
            optimize.create_optimization_job(
                session,
                caller.require_org(),
                body,
                now=platform.clock.now(),
                default_max_drop=platform.settings.optimize_max_metric_drop,
                default_max_attempts=platform.settings.job_max_attempts,
            )
        ),
    )


@router.get("/optimizations", response_model=Page[JobPublic], name="optimizations.list")
def list_optimizations(platform: PlatformDep, caller: JobsRead, page: PageDep) -> object:
    with platform.db.read_session() as session:
        return jobs.list_jobs(
            session, caller.require_org(), kind=KIND, status=None, limit=page.limit, after=page.after
        )


@router.get("/optimizations/{job_id}", response_model=JobPublic, name="optimizations.get")
def get_optimization(job_id: str, platform: PlatformDep, caller: JobsRead) -> object:
    with platform.db.read_session() as session:
        return JobPublic.of(jobs.get_job(session, caller.require_org(), job_id, KIND))


@router.post("/optimizations/{job_id}/cancel", response_model=JobPublic, name="optimizations.cancel")
def cancel_optimization(job_id: str, platform: PlatformDep, caller: JobsWrite) -> object:
    with platform.db.session() as session:
        return JobPublic.of(
            jobs.cancel_job(session, caller.require_org(), job_id, platform.clock.now(), KIND)
        )


@router.get("/optimizations/{job_id}/events", response_model=JobEventList, name="optimizations.events")
async def optimization_events(
    job_id: str,
    request: Request,
    caller: JobsRead,
    after: AfterQuery = None,
    limit: LimitQuery = 100,
    stream: StreamQuery = False,
) -> object:
    return await events_response(request, caller.require_org(), job_id, after, limit, stream, kind=KIND)
