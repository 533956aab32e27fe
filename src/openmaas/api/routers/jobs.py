"""`/v1/jobs`: every job of the organisation (validation, training, …): list, get, cancel, and
events — listed, or streamed as server-sent events while the job runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from openmaas.api.deps import PageDep, PlatformDep, ReadSessionDep, SessionDep, scope
from openmaas.api.responses import KEYED, errors
from openmaas.bootstrap import Platform
from openmaas.jobs import service as jobs
from openmaas.schemas.jobs import JobEventList, JobPublic
from openmaas.schemas.pages import Page
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1", tags=["jobs"], responses=KEYED)

JobsRead = Annotated[Principal, scope("jobs:read")]
JobsWrite = Annotated[Principal, scope("jobs:write")]
AfterQuery = Annotated[int | None, Query(ge=0, description="Only events after this event id")]
LimitQuery = Annotated[int, Query(ge=1, le=1000)]
StreamQuery = Annotated[bool, Query(description="Stream events as server-sent events until the job ends")]
POLL_S = 0.5
KEEPALIVE_S = 15.0


@router.get("/jobs", response_model=Page[JobPublic], name="jobs.list", responses=errors(422))
def list_jobs(
    session: ReadSessionDep,
    caller: JobsRead,
    page: PageDep,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> object:
    return jobs.list_jobs(
        session, caller.require_org(), kind=kind, status=status, limit=page.limit, after=page.after
    )


@router.get("/jobs/{job_id}", response_model=JobPublic, name="jobs.get", responses=errors(404, 422))
def get_job(job_id: str, session: ReadSessionDep, caller: JobsRead) -> object:
    return jobs.job_public(jobs.get_job(session, caller.require_org(), job_id))


@router.post(
    "/jobs/{job_id}/cancel", response_model=JobPublic, name="jobs.cancel", responses=errors(404, 409, 422)
)
def cancel_job(job_id: str, session: SessionDep, platform: PlatformDep, caller: JobsWrite) -> object:
    return jobs.job_public(jobs.cancel_job(session, caller.require_org(), job_id, platform.clock.now()))


@router.post(
    "/jobs/{job_id}/pause", response_model=JobPublic, name="jobs.pause", responses=errors(404, 409, 422)
)
def pause_job(job_id: str, session: SessionDep, platform: PlatformDep, caller: JobsWrite) -> object:
    """Pause a queued or running job; a running one stops at its next batch, keeping its checkpoints."""
    return jobs.job_public(jobs.pause_job(session, caller.require_org(), job_id, platform.clock.now()))


@router.post(
    "/jobs/{job_id}/resume", response_model=JobPublic, name="jobs.resume", responses=errors(404, 409, 422)
)
def resume_job(job_id: str, session: SessionDep, platform: PlatformDep, caller: JobsWrite) -> object:
    """Queue a paused job again; it resumes from its last checkpoint."""
    return jobs.job_public(jobs.resume_job(session, caller.require_org(), job_id, platform.clock.now()))


def events_route(kind: str | None) -> Callable[..., Awaitable[object]]:
    """The events route of the jobs of `kind` (None: any job): listed, or streamed with `stream`."""

    async def job_events(
        job_id: str,
        request: Request,
        caller: JobsRead,
        after: AfterQuery = None,
        limit: LimitQuery = 100,
        stream: StreamQuery = False,
    ) -> object:
        return await events_response(request, caller.require_org(), job_id, after, limit, stream, kind=kind)

    return job_events


router.add_api_route(
    "/jobs/{job_id}/events",
    events_route(None),
    methods=["GET"],
    response_model=JobEventList,
    name="jobs.events",
    responses=errors(404, 422),
)


async def events_response(
    request: Request,
    org_id: str,
    job_id: str,
    after: int | None,
    limit: int,
    stream: bool,
    *,
    kind: str | None,
) -> object:
    """A page of events, or (`stream`, or `Accept: text/event-stream`) an SSE stream of them."""
    platform: Platform = request.app.state.platform
    first = await run_in_threadpool(_read_events, platform, org_id, job_id, after, limit, kind)
    if not (stream or "text/event-stream" in request.headers.get("accept", "")):
        return first
    return StreamingResponse(
        _sse(platform, org_id, job_id, first, limit, kind),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _read_events(
    platform: Platform, org_id: str, job_id: str, after: int | None, limit: int, kind: str | None
) -> JobEventList:
    # Its own read each time: the stream polls on after the response has started.
    with platform.db.read_session() as session:
        return jobs.job_events(session, org_id, job_id, after=after, limit=limit, kind=kind)


async def _sse(
    platform: Platform, org_id: str, job_id: str, page: JobEventList, limit: int, kind: str | None
) -> AsyncIterator[str]:
    idle = 0.0
    while True:
        for event in page.data:
            yield f"id: {event.id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"
        if not page.has_more and jobs.is_finished(page.job_status):
            yield f'event: done\ndata: {{"status": "{page.job_status}"}}\n\n'
            return
        if not page.data:
            await asyncio.sleep(POLL_S)
            idle += POLL_S
            if idle >= KEEPALIVE_S:
                idle = 0.0
                yield ": keep-alive\n\n"
        else:
            idle = 0.0
        page = await run_in_threadpool(_read_events, platform, org_id, job_id, page.last_id, limit, kind)


def add_kind_routes(router: APIRouter, path: str, kind: str, name: str) -> None:
    """List, get, cancel and events routes for the jobs of one `kind` under `path` (the
    `/v1/training_jobs` and `/v1/optimizations` views of `/v1/jobs`)."""

    def list_kind(session: ReadSessionDep, caller: JobsRead, page: PageDep) -> object:
        return jobs.list_jobs(
            session, caller.require_org(), kind=kind, status=None, limit=page.limit, after=page.after
        )

    def get_kind(job_id: str, session: ReadSessionDep, caller: JobsRead) -> object:
        return jobs.job_public(jobs.get_job(session, caller.require_org(), job_id, kind))

    def cancel_kind(job_id: str, session: SessionDep, platform: PlatformDep, caller: JobsWrite) -> object:
        job = jobs.cancel_job(session, caller.require_org(), job_id, platform.clock.now(), kind)
        return jobs.job_public(job)

    router.add_api_route(
        path,
        list_kind,
        methods=["GET"],
        response_model=Page[JobPublic],
        name=f"{name}.list",
        responses=errors(422),
    )
    item = f"{path}/{{job_id}}"
    router.add_api_route(
        item,
        get_kind,
        methods=["GET"],
        response_model=JobPublic,
        name=f"{name}.get",
        responses=errors(404, 422),
    )
    router.add_api_route(
        f"{item}/cancel",
        cancel_kind,
        methods=["POST"],
        response_model=JobPublic,
        name=f"{name}.cancel",
        responses=errors(404, 409, 422),
    )
    router.add_api_route(
        f"{item}/events",
        events_route(kind),
        methods=["GET"],
        response_model=JobEventList,
        name=f"{name}.events",
        responses=errors(404, 422),
    )
