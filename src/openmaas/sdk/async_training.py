"""Asyncio SDK resources for datasets, jobs, training jobs and the registry; the same calls as
`training.py`, awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from openmaas.jobs.schemas import JobEventList, JobPublic
from openmaas.pagination import Page
from openmaas.registry.schemas import Comparison, DatasetPublic, ModelPublic, ModelVersionPublic
from openmaas.sdk import training_calls as calls
from openmaas.sdk.errors import APIConnectionError, error_for
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
