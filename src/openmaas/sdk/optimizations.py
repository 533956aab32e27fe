"""SDK resource for optimisation jobs: `client.optimizations.create("churn:1", method="dynamic-int8")`
starts one; `wait` follows it to its end; the result is a new registry version whose manifest
holds its measured numbers next to its parent's (`client.registry.version(ref).manifest`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openmaas.schemas.jobs import JobEventList, JobPublic
from openmaas.schemas.pages import Page
from openmaas.sdk.calls import Call

if TYPE_CHECKING:
    from openmaas.sdk.async_client import AsyncClient
    from openmaas.sdk.client import Client

PATH = "/v1/optimizations"


def optimization_body(model: str, method: str, max_metric_drop: float | None, force: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "method": method, "force": force}
    if max_metric_drop is not None:
        body["max_metric_drop"] = max_metric_drop
    return body


class Optimizations:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        model: str,
        *,
        method: str,
        max_metric_drop: float | None = None,
        force: bool = False,
        idempotency_key: str | None = None,
    ) -> JobPublic:
        """Start optimising `model` (name:3 or name@alias) with `method`."""
        body = optimization_body(model, method, max_metric_drop, force)
        return self._client.send(Call("POST", PATH, JobPublic, body, idempotency_key=idempotency_key))

    def list(self, *, limit: int | None = None, after: str | None = None) -> Page[JobPublic]:
        return self._client.send(Call("GET", PATH, Page[JobPublic], params={"limit": limit, "after": after}))

    def get(self, job_id: str) -> JobPublic:
        return self._client.send(Call("GET", f"{PATH}/{job_id}", JobPublic))

    def cancel(self, job_id: str) -> JobPublic:
        return self._client.send(Call("POST", f"{PATH}/{job_id}/cancel", JobPublic))

    def events(self, job_id: str, *, after: int | None = None) -> JobEventList:
        return self._client.send(
            Call("GET", f"{PATH}/{job_id}/events", JobEventList, params={"after": after})
        )

    def wait(self, job_id: str, timeout: float = 3600.0, interval: float = 0.5) -> JobPublic:
        """Poll the job until it ends (any kind of job; see `client.jobs.wait`)."""
        return self._client.jobs.wait(job_id, timeout=timeout, interval=interval)


class AsyncOptimizations:
    """`Optimizations`, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        model: str,
        *,
        method: str,
        max_metric_drop: float | None = None,
        force: bool = False,
        idempotency_key: str | None = None,
    ) -> JobPublic:
        body = optimization_body(model, method, max_metric_drop, force)
        return await self._client.send(Call("POST", PATH, JobPublic, body, idempotency_key=idempotency_key))

    async def list(self, *, limit: int | None = None, after: str | None = None) -> Page[JobPublic]:
        params = {"limit": limit, "after": after}
        return await self._client.send(Call("GET", PATH, Page[JobPublic], params=params))

    async def get(self, job_id: str) -> JobPublic:
        return await self._client.send(Call("GET", f"{PATH}/{job_id}", JobPublic))

    async def cancel(self, job_id: str) -> JobPublic:
        return await self._client.send(Call("POST", f"{PATH}/{job_id}/cancel", JobPublic))

    async def events(self, job_id: str, *, after: int | None = None) -> JobEventList:
        return await self._client.send(
            Call("GET", f"{PATH}/{job_id}/events", JobEventList, params={"after": after})
        )

    async def wait(self, job_id: str, timeout: float = 3600.0, interval: float = 0.5) -> JobPublic:
        return await self._client.jobs.wait(job_id, timeout=timeout, interval=interval)
