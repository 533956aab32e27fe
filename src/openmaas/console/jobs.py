"""Jobs (training, optimisation, imports, …): the list, and one job's status, live metric curves
drawn from its events (the page polls `events.json` while the job runs), its final metrics, its
event log, and cancel / pause / resume — the same service calls and scopes as `/v1/jobs`."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openmaas import errors
from openmaas.console.web import PREFIX, ConsoleRoute, platform_of, redirect, render, signed_form, signed_in
from openmaas.jobs import service as jobs
from openmaas.jobs.tables import JobStatus
from openmaas.schemas.jobs import JobEventList

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

_FIRST_EVENTS = 1000  # read with the page; the rest (and what comes) the page fetches itself
_POLL_EVENTS = 500
_ACTIONS = {"cancel": jobs.cancel_job, "pause": jobs.pause_job, "resume": jobs.resume_job}
_STATUSES = [status.value for status in JobStatus]
# Keys of a metrics event that are not metrics.
_NOT_METRICS = {"epoch", "total_epochs", "seconds", "step"}

After = Annotated[str | None, Query(max_length=100)]
Status = Annotated[str | None, Query(max_length=40)]


@router.get("/jobs", name="console.jobs")
def jobs_page(request: Request, after: After = None, status: Status = None) -> Response:
    signed = signed_in(request)
    signed.principal.require("jobs:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    status = status if status in _STATUSES else None
    with platform.db.read_session() as session:
        page = jobs.list_jobs(
            session, org_id, kind=None, status=status, limit=platform.settings.default_page_limit, after=after
        )
    return render(request, "jobs.html", signed, page=page, after=after, shown=status, statuses=_STATUSES)


@router.get("/jobs/{job_id}", name="console.job")
def job_page(request: Request, job_id: str) -> Response:
    signed = signed_in(request)
    signed.principal.require("jobs:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        job = jobs.job_public(jobs.get_job(session, org_id, job_id))
        events = jobs.job_events(session, org_id, job_id, after=None, limit=_FIRST_EVENTS)
    curves = _curves(events)
    metrics = (job.result or {}).get("metrics") if isinstance(job.result, dict) else None
    return render(
        request,
        "job.html",
        signed,
        job=job,
        events=list(reversed(events.data[-50:])),
        curves=curves,
        live={"url": f"{PREFIX}/jobs/{job_id}/events.json", "after": events.last_id, "more": events.has_more},
        finished=JobStatus(job.status).is_terminal,
        final=_final(metrics),
        confusion=(metrics or {}).get("confusion_matrix") if isinstance(metrics, dict) else None,
        params=json.dumps(job.params, indent=2, sort_keys=True),
    )


@router.get("/jobs/{job_id}/events.json", name="console.job_events")
def job_events(request: Request, job_id: str, after: Annotated[int | None, Query(ge=0)] = None) -> Response:
    """The job's events after `after`, for the page's live curves (the session's cookie, not a key)."""
    signed = signed_in(request)
    signed.principal.require("jobs:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        page = jobs.job_events(session, org_id, job_id, after=after, limit=_POLL_EVENTS)
    return Response(
        page.model_dump_json(), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


@router.post("/jobs/{job_id}/{action}", name="console.jobs.act")
async def act(request: Request, job_id: str, action: str) -> Response:
    await apply_action(request, job_id, action)
    return redirect(f"{PREFIX}/jobs/{job_id}")


async def apply_action(request: Request, job_id: str, action: str, *, kind: str | None = None) -> None:
    """Cancel, pause or resume one of the signed-in organisation's jobs (of `kind` when given:
    another kind's id is a 404), from a signed form."""
    signed, _ = await signed_form(request)
    signed.principal.require("jobs:write")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    change = _ACTIONS.get(action)
    if change is None:
        raise errors.NotFound(f"No job action {action!r}; use cancel, pause or resume.", param="action")

    def run() -> None:
        with platform.db.session() as session:
            if kind is not None:
                jobs.get_job(session, org_id, job_id, kind=kind)
            change(session, org_id, job_id, platform.clock.now())

    await run_in_threadpool(run)


def _curves(events: JobEventList) -> dict[str, Any]:
    """The metrics events as chart columns: x = epoch, one series per numeric metric."""
    points = [e.data for e in events.data if e.type == "metrics" and e.data]
    names = sorted({k for p in points for k, v in p.items() if k not in _NOT_METRICS and _number(v)})
    return {
        "x": [p.get("epoch", i + 1) for i, p in enumerate(points)],
        "series": [
            {"label": n, "values": [p.get(n) if _number(p.get(n)) else None for p in points]} for n in names
        ],
        "total": next((p["total_epochs"] for p in reversed(points) if "total_epochs" in p), None),
    }


def _final(metrics: Any) -> list[tuple[str, str]]:
    if not isinstance(metrics, dict):
        return []
    return [(k, f"{v:.4g}") for k, v in sorted(metrics.items()) if _number(v)]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
