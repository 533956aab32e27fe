"""`/v1/optimizations`: optimise a model version (ONNX export, int8 quantisation, pruning) in a
job that registers the measured result as a new version; follow, list or cancel the runs. The
result and its parent are compared with `/v1/registry/compare` or the version's manifest."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from openmaas.api.deps import CreatorDep, PlatformDep, scope
from openmaas.api.responses import JSON_BODY, KEYED, errors
from openmaas.api.routers.jobs import add_kind_routes
from openmaas.jobs.service import job_public
from openmaas.optimize import jobs as optimize
from openmaas.schemas.jobs import JobPublic
from openmaas.schemas.optimize import OptimizationCreate
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1", tags=["optimizations"], responses=KEYED)

JobsWrite = Annotated[Principal, scope("jobs:write")]
KIND = optimize.OPTIMIZE_KIND


@router.post(
    "/optimizations",
    status_code=201,
    response_model=JobPublic,
    name="optimizations.create",
    responses=errors(*JSON_BODY, 402, 404, 409),
)
def create_optimization(
    body: OptimizationCreate, platform: PlatformDep, caller: JobsWrite, create: CreatorDep
) -> object:
    caller.require("models:write")
    platform.job_compute.check_budget(caller.require_org())  # 402 when no compute can be paid for
    return create(
        body,
        lambda session: job_public(
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


add_kind_routes(router, "/optimizations", KIND, "optimizations")
