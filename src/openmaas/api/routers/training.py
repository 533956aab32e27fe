"""`/v1/training_jobs`: start training a model on a dataset, and follow, list or cancel the runs.
A finished run registers a model version (see `/v1/registry`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from openmaas.api.deps import CreatorDep, PlatformDep, scope
from openmaas.api.responses import JSON_BODY, KEYED, errors
from openmaas.api.routers.jobs import add_kind_routes
from openmaas.jobs.service import job_public
from openmaas.schemas.jobs import JobPublic
from openmaas.schemas.training import TrainingJobCreate
from openmaas.tenancy.auth import Principal
from openmaas.training import jobs as training

router = APIRouter(prefix="/v1", tags=["training"], responses=KEYED)

TrainWrite = Annotated[Principal, scope("jobs:write")]
KIND = training.TRAIN_KIND


@router.post(
    "/training_jobs",
    status_code=201,
    response_model=JobPublic,
    name="training_jobs.create",
    responses=errors(*JSON_BODY, 402, 404, 409),
)
def create_training_job(
    body: TrainingJobCreate, platform: PlatformDep, caller: TrainWrite, create: CreatorDep
) -> object:
    caller.require("datasets:read")
    caller.require("models:write")
    platform.job_compute.check_budget(caller.require_org())  # 402 when no compute can be paid for
    return create(
        body,
        lambda session: job_public(
            training.create_training_job(
                session,
                caller.require_org(),
                body,
                now=platform.clock.now(),
                default_max_attempts=platform.settings.job_max_attempts,
                executor=platform.settings.executor,
            )
        ),
    )


add_kind_routes(router, "/training_jobs", KIND, "training_jobs")
