"""Asyncio SDK resources for datasets, jobs, training jobs and the registry; the same calls as
`training.py`, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from openmaas.schemas.datasets import DatasetPublic
from openmaas.schemas.jobs import JobEventList, JobEventPublic, JobPublic
from openmaas.schemas.pages import Page
from openmaas.schemas.registry import Comparison, ModelPublic, ModelVersionPublic
from openmaas.sdk import training_calls as calls
from openmaas.sdk.errors import APIConnectionError, error_for
from openmaas.sdk.training import FINISHED
from openmaas.sdk.uploads import CHUNK

if TYPE_CHECKING:
    from openmaas.sdk.async_client import AsyncClient


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


class AsyncDatasets:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def upload(self, path: str | Path, *, name: str, target: str | None = None) -> DatasetPublic:
        path = Path(path)
        params = {"name": name, "filename": path.name, **({"target": target} if target else {})}
        try:
            response = await self._client._http.post(
                "/v1/datasets",
                params=params,
                content=_file_chunks(path),
                headers={"Content-Type": "application/octet-stream"},
                timeout=None,
            )
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Cannot reach {self._client._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise error_for(response)
        return DatasetPublic.model_validate_json(response.content)

    async def list(
        self, *, name: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Page[DatasetPublic]:
        return await self._client.send(calls.list_datasets(name, limit, after))

    async def get(self, ref: str) -> DatasetPublic:
        return await self._client.send(calls.get_dataset(ref))

    async def wait_validated(self, ref: str, timeout: float = 600.0, interval: float = 0.5) -> DatasetPublic:
        """Poll until validation ended (`ready` or `failed`)."""
        deadline = time.monotonic() + timeout
        while (dataset := await self.get(ref)).status == "validating":
            if time.monotonic() > deadline:
                raise TimeoutError(f"dataset {ref} still validating after {timeout}s")
            await asyncio.sleep(interval)
        return dataset


class AsyncJobs:
    def __init__(self, client: AsyncClient, *, training: bool = False) -> None:
        self._client = client
        self._training = training

    async def list(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Page[JobPublic]:
        return await self._client.send(calls.list_jobs(kind, status, limit, after, training=self._training))

    async def get(self, job_id: str) -> JobPublic:
        return await self._client.send(calls.get_job(job_id))

    async def cancel(self, job_id: str) -> JobPublic:
        return await self._client.send(calls.cancel_job(job_id))

    async def pause(self, job_id: str) -> JobPublic:
        return await self._client.send(calls.pause_job(job_id))

    async def resume(self, job_id: str) -> JobPublic:
        return await self._client.send(calls.resume_job(job_id))

    async def events(
        self, job_id: str, *, after: int | None = None, limit: int | None = None
    ) -> JobEventList:
        return await self._client.send(calls.job_events(job_id, after, limit))

    async def stream_events(self, job_id: str, *, after: int | None = None) -> AsyncIterator[JobEventPublic]:
        """Events as they happen (server-sent events), until the job ends."""
        params: dict[str, str | int] = {"stream": "true"}
        if after is not None:
            params["after"] = after
        parser = calls.EventStreamParser()
        try:
            async with self._client._http.stream(
                "GET", f"/v1/jobs/{job_id}/events", params=params, timeout=None
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_for(response)
                async for line in response.aiter_lines():
                    for event in parser.feed([line]):
                        yield event
                    if parser.done:
                        return
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Cannot reach {self._client._http.base_url}: {exc}") from exc

    async def wait(self, job_id: str, timeout: float = 3600.0, interval: float = 0.5) -> JobPublic:
        """Poll until the job ends; returns it in its final state."""
        deadline = time.monotonic() + timeout
        while (job := await self.get(job_id)).status not in FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout}s")
            await asyncio.sleep(interval)
        return job


class AsyncTrainingJobs(AsyncJobs):
    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, training=True)

    async def create(
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
    ) -> JobPublic:
        body = calls.training_body(task, dataset, target, params, preprocessing, model, parent)
        return await self._client.send(calls.create_training_job(body, idempotency_key))


class AsyncRegistry:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def models(self, *, limit: int | None = None, after: str | None = None) -> Page[ModelPublic]:
        return await self._client.send(calls.list_models(limit, after))

    async def model(self, name: str) -> ModelPublic:
        return await self._client.send(calls.get_model(name))

    async def versions(
        self, name: str, *, limit: int | None = None, after: str | None = None
    ) -> Page[ModelVersionPublic]:
        return await self._client.send(calls.list_versions(name, limit, after))

    async def version(self, ref: str) -> ModelVersionPublic:
        return await self._client.send(calls.get_version(ref))

    async def compare(self, refs: list[str]) -> Comparison:
        return await self._client.send(calls.compare_versions(refs))

    async def set_alias(self, name: str, alias: str, version: int) -> ModelPublic:
        return await self._client.send(calls.set_alias(name, alias, version))

    async def tag(self, ref: str, tags: dict[str, str | None]) -> ModelVersionPublic:
        return await self._client.send(calls.tag_version(ref, tags))

    async def delete(self, ref: str) -> ModelVersionPublic:
        return await self._client.send(calls.delete_version(ref))

    async def delete_model(self, name: str) -> ModelPublic:
        """The model with all its versions (409 `version_in_use` while any is listed or served)."""
        return await self._client.send(calls.delete_model(name))

    async def download(self, ref: str, dest: str | Path) -> Path:
        """Save the version's artifact folder as a zip file at `dest`."""
        dest = Path(dest)
        try:
            async with self._client._http.stream("GET", f"/v1/registry/versions/{ref}/download") as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_for(response)
                with open(dest, "wb") as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Cannot reach {self._client._http.base_url}: {exc}") from exc
        return dest
