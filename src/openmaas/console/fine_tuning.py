"""Fine-tuning jobs (OpenAI's `/v1/fine_tuning/jobs`): the list, a form that creates a job from
a base model and a `fine-tune` file with its hyperparameters, and a job's page — its status, the
live training and validation loss by step (the page polls the job's events as the jobs page
does), checkpoints, cancel / pause / resume, and the `fine_tuned_model` id to copy. The same
service calls and scopes as the API routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from openmaas import errors
from openmaas.console.jobs import apply_action
from openmaas.console.web import (
    PREFIX,
    ConsoleRoute,
    platform_of,
    redirect,
    render,
    signed_form,
    signed_in,
    validated,
)
from openmaas.datasets import files as file_service
from openmaas.jobs import service as jobs
from openmaas.jobs.tables import JobStatus
from openmaas.schemas.fine_tuning import FineTuningJobCreate
from openmaas.training import finetune_jobs
from openmaas.training.finetune_jobs import FINE_TUNE_KIND, FineTuneParams, fine_tuning_job_public

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

After = Annotated[str | None, Query(max_length=100)]
_FIRST_EVENTS = 500  # read with the page; the rest (and what comes) the page fetches itself
_FILES_SHOWN = 100  # the newest fine-tune files offered in the form
_HYPER = ("n_epochs", "batch_size", "learning_rate_multiplier")


@router.get("/fine-tuning", name="console.fine_tuning")
def jobs_page(request: Request, after: After = None) -> Response:
    return _list(request, after=after)


@router.post("/fine-tuning", name="console.fine_tuning.create")
async def create(request: Request) -> Response:
    signed, form = await signed_form(request)
    platform = platform_of(request)

    def run() -> str:
        signed.principal.require("jobs:write")
        signed.principal.require("datasets:read")
        signed.principal.require("models:write")
        org_id = signed.principal.require_org()
        body = validated(FineTuningJobCreate, _body(form))
        with platform.db.session() as session:
            job = finetune_jobs.create_fine_tuning_job(
                session,
                platform.store,
                org_id,
                body,
                now=platform.clock.now(),
                max_attempts=platform.settings.job_max_attempts,
            )
            return job.id

    try:
        job_id = await run_in_threadpool(run)
    except errors.OpenMaaSError as exc:
        if isinstance(exc, errors.PermissionDenied):
            raise
        values = {k: str(v) for k, v in form.items() if k != "csrf_token"}
        failure = exc
        return await run_in_threadpool(
            lambda: _list(request, error=failure, values=values, status=failure.status)
        )
    return redirect(f"{PREFIX}/fine-tuning/{job_id}")


@router.get("/fine-tuning/{job_id}", name="console.fine_tuning.job")
def job_page(request: Request, job_id: str) -> Response:
    signed = signed_in(request)
    signed.principal.require("jobs:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        row = jobs.get_job(session, org_id, job_id, kind=FINE_TUNE_KIND)
        job = fine_tuning_job_public(row)
        params = FineTuneParams.model_validate(row.params)
        checkpoints = finetune_jobs.list_checkpoints(session, row).data
        events = jobs.job_events(session, org_id, job_id, after=None, limit=_FIRST_EVENTS)
    finished = JobStatus(job.status).is_terminal
    return render(
        request,
        "fine_tuning_job.html",
        signed,
        job=job,
        planned_model=params.fine_tuned_model,
        checkpoints=checkpoints,
        events=list(reversed(events.data[-50:])),
        curves=losses(events.data),
        live={"url": f"{PREFIX}/jobs/{job_id}/events.json", "after": events.last_id, "more": events.has_more},
        finished=finished,
    )


@router.post("/fine-tuning/{job_id}/{action}", name="console.fine_tuning.act")
async def act(request: Request, job_id: str, action: str) -> Response:
    await apply_action(request, job_id, action, kind=FINE_TUNE_KIND)  # another kind's id: 404
    return redirect(f"{PREFIX}/fine-tuning/{job_id}")


def losses(events: list[Any]) -> dict[str, Any]:
    """The loss curves by step: training loss from each step's event, validation loss (or the
    epoch's full training loss) from each epoch's; one x per step, the epoch's values merged in."""
    by_step: dict[int, dict[str, Any]] = {}
    for event in events:
        data = event.data or {}
        if event.type != "metrics" or "step" not in data:
            continue
        point = by_step.setdefault(int(data["step"]), {})
        if "total_steps" in data:
            point["train_loss"] = data.get("train_loss")
        elif "full_valid_loss" in data:
            point["valid_loss"] = data["full_valid_loss"]
        elif "train_loss" in data:
            point["epoch_train_loss"] = data["train_loss"]
    steps = sorted(by_step)
    names = [
        n for n in ("train_loss", "valid_loss", "epoch_train_loss") if any(n in p for p in by_step.values())
    ]
    return {"x": steps, "series": [{"label": n, "values": [by_step[s].get(n) for s in steps]} for n in names]}


def _list(
    request: Request,
    *,
    status: int = 200,
    error: Any = None,
    values: dict[str, str] | None = None,
    **given: Any,
) -> Response:
    signed = signed_in(request)
    signed.principal.require("jobs:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    limit = platform.settings.default_page_limit
    with platform.db.read_session() as session:
        listed = finetune_jobs.list_fine_tuning_jobs(session, org_id, limit=limit, after=given.get("after"))
        rows = listed.data
        files = file_service.list_files(
            session, org_id, purpose=file_service.FINE_TUNE, limit=_FILES_SHOWN, after=None, ascending=False
        ).data
    return render(
        request,
        "fine_tuning.html",
        signed,
        status=status,
        page=listed,
        rows=rows,
        files=files,
        error=error,
        values=values or {},
        after=given.get("after"),
    )


def _body(form: FormData) -> dict[str, Any]:
    """The form's fields as the API's create body: empty fields left out, hyperparameters that
    are numbers sent as numbers ('auto' as it is)."""
    text = {k: str(v).strip() for k, v in form.items() if isinstance(v, str)}
    body: dict[str, Any] = {k: text[k] for k in ("model", "training_file") if k in text}
    for optional in ("validation_file", "suffix"):
        if text.get(optional):
            body[optional] = text[optional]
    if text.get("seed"):
        body["seed"] = _number(text["seed"], "seed")
    hyper: dict[str, Any] = {}
    for name in (*_HYPER, "lora_rank"):
        if text.get(name) and text[name] != "auto":
            hyper[name] = _number(text[name], f"method.supervised.hyperparameters.{name}")
    if hyper:
        body["method"] = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
    return body


def _number(text: str, param: str) -> int | float:
    try:
        return int(text) if text.lstrip("-").isdigit() else float(text)
    except ValueError:
        raise errors.ValidationFailed(f"{param}: expected a number or 'auto'.", param=param) from None
