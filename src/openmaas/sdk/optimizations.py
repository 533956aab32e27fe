"""SDK resource for optimisation jobs: `client.optimizations.create("churn:1", method="dynamic-int8")`
starts one; `wait` follows it to its end; the result is a new registry version whose manifest
holds its measured numbers next to its parent's (`client.registry.version(ref).manifest`)."""

from __future__ import annotations

from typing import Any

from openmaas.schemas.jobs import JobEventList, JobPublic
from openmaas.schemas.pages import Page
from openmaas.sdk.calls import Call, Plan, creating
from openmaas.sdk.jobs import wait_for_job
from openmaas.sdk.resource import Resource, S, endpoint

PATH = "/v1/optimizations"


class Optimizations(Resource[S]):
    @endpoint
    def create(
        self,
        model: str,
        *,
        method: str,
        max_metric_drop: float | None = None,
        force: bool = False,
        idempotency_key: str | None = None,
    ) -> Call[JobPublic]:
        """Start optimising `model` (name:3 or name@alias) with `method`."""
        job: dict[str, Any] = {"model": model, "method": method, "force": force}
        if max_metric_drop is not None:
            job["max_metric_drop"] = max_metric_drop
        return creating(PATH, JobPublic, job, idempotency_key)

    @endpoint
    def list(self, *, limit: int | None = None, after: str | None = None) -> Call[Page[JobPublic]]:
        return Call("GET", PATH, Page[JobPublic], params={"limit": limit, "after": after})

    @endpoint
    def get(self, job_id: str) -> Call[JobPublic]:
        return Call("GET", f"{PATH}/{job_id}", JobPublic)

    @endpoint
    def cancel(self, job_id: str) -> Call[JobPublic]:
        return Call("POST", f"{PATH}/{job_id}/cancel", JobPublic)

    @endpoint
    def events(self, job_id: str, *, after: int | None = None) -> Call[JobEventList]:
        return Call("GET", f"{PATH}/{job_id}/events", JobEventList, params={"after": after})

    @endpoint
    def wait(self, job_id: str, timeout: float = 3600.0, interval: float = 0.5) -> Plan[JobPublic]:
        """Poll the job until it ends (any kind of job; see `client.jobs.wait`)."""
        return wait_for_job(job_id, timeout, interval)
