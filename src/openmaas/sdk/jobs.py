"""SDK resources for jobs and training jobs: `client.training_jobs.create(task=..., dataset=...)`,
`client.jobs.stream_events(job_id)`, `client.jobs.wait(job_id)`."""

from __future__ import annotations

import time
from typing import Any

from openmaas.schemas.jobs import JobEventList, JobPublic
from openmaas.schemas.pages import Page
from openmaas.sdk.calls import Call, Plan, Sleep, creating
from openmaas.sdk.events import EventStream
from openmaas.sdk.resource import Resource, S, endpoint, event_stream

FINISHED = frozenset({"succeeded", "failed", "cancelled"})


def _get(job_id: str) -> Call[JobPublic]:
    return Call("GET", f"/v1/jobs/{job_id}", JobPublic)


def wait_for_job(job_id: str, timeout: float, interval: float) -> Plan[JobPublic]:
    """Poll a job (of any kind) until it ends; its final state."""
    deadline = time.monotonic() + timeout
    while (job := (yield from _get(job_id))).status not in FINISHED:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.status} after {timeout}s")
        yield Sleep(interval)
    return job


class Jobs(Resource[S]):
    """Every job of the organisation; `training=True` narrows the list to training jobs."""

    def __init__(self, sender: S, *, training: bool = False) -> None:
        super().__init__(sender)
        self._training = training

    @endpoint
    def list(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Call[Page[JobPublic]]:
        if self._training:
            return Call("GET", "/v1/training_jobs", Page[JobPublic], params={"limit": limit, "after": after})
        params = {"kind": kind, "status": status, "limit": limit, "after": after}
        return Call("GET", "/v1/jobs", Page[JobPublic], params=params)

    @endpoint
    def get(self, job_id: str) -> Call[JobPublic]:
        return _get(job_id)

    @endpoint
    def cancel(self, job_id: str) -> Call[JobPublic]:
        return Call("POST", f"/v1/jobs/{job_id}/cancel", JobPublic)

    @endpoint
    def pause(self, job_id: str) -> Call[JobPublic]:
        return Call("POST", f"/v1/jobs/{job_id}/pause", JobPublic)

    @endpoint
    def resume(self, job_id: str) -> Call[JobPublic]:
        return Call("POST", f"/v1/jobs/{job_id}/resume", JobPublic)

    @endpoint
    def events(
        self, job_id: str, *, after: int | None = None, limit: int | None = None
    ) -> Call[JobEventList]:
        params = {"after": after, "limit": limit}
        return Call("GET", f"/v1/jobs/{job_id}/events", JobEventList, params=params)

    @event_stream
    def stream_events(self, job_id: str, *, after: int | None = None) -> EventStream:
        """Events as they happen (server-sent events), until the job ends."""
        params: dict[str, Any] = {"stream": "true", **({"after": after} if after is not None else {})}
        return EventStream(f"/v1/jobs/{job_id}/events", params)

    @endpoint
    def wait(self, job_id: str, timeout: float = 3600.0, interval: float = 0.5) -> Plan[JobPublic]:
        """Poll until the job ends; returns it in its final state."""
        return wait_for_job(job_id, timeout, interval)


class TrainingJobs(Jobs[S]):
    def __init__(self, sender: S) -> None:
        super().__init__(sender, training=True)

    @endpoint
    def create(
        self,
        *,
        task: str,
        dataset: str,
        target: str | None = None,
        params: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
        model: str | None = None,
        parent: str | None = None,
        idempotency_key: str | None = None,
    ) -> Call[JobPublic]:
        job = {"task": task, "dataset": dataset, "target": target, "params": params or {}}
        job.update(preprocessing=preprocessing or {}, model=model, parent=parent)
        given = {key: value for key, value in job.items() if value is not None}
        return creating("/v1/training_jobs", JobPublic, given, idempotency_key)
