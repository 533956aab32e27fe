"""Synchronous SDK resources for datasets, jobs, training jobs and the model registry:
`client.datasets.upload("data.csv", name="churn")`, `client.training_jobs.create(...)`,
`client.registry.version("churn@production")`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from openmaas.schemas.datasets import DatasetPublic
from openmaas.schemas.jobs import JobEventList, JobEventPublic, JobPublic
from openmaas.schemas.pages import Page
from openmaas.schemas.registry import Comparison, ModelPublic, ModelVersionPublic
from openmaas.sdk import training_calls as calls
from openmaas.sdk.errors import APIConnectionError, error_for
from openmaas.sdk.uploads import Progress, file_chunks

if TYPE_CHECKING:
    from openmaas.sdk.client import Client

FINISHED = frozenset({"succeeded", "failed", "cancelled"})


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise error_for(response)
    return response


class Datasets:
    def __init__(self, client: Client) -> None:
        self._client = client

    def upload(
        self, path: str | Path, *, name: str, target: str | None = None, progress: Progress | None = None
    ) -> DatasetPublic:
        """Stream a file as a new version of dataset `name` (or get the version with the same bytes)."""
        path = Path(path)
        params = {"name": name, "filename": path.name, **({"target": target} if target else {})}
        try:
            response = self._client._http.post(
                "/v1/datasets",
                params=params,
                content=file_chunks(path, progress),
                headers={"Content-Type": "application/octet-stream"},
                timeout=None,
            )
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Cannot reach {self._client._http.base_url}: {exc}") from exc
        return DatasetPublic.model_validate_json(_checked(response).content)

    def list(
        self, *, name: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Page[DatasetPublic]:
        return self._client.send(calls.list_datasets(name, limit, after))

    def get(self, ref: str) -> DatasetPublic:
        """By id, `name` (the latest version) or `name:version`."""
        return self._client.send(calls.get_dataset(ref))

    def wait_validated(self, ref: str, timeout: float = 600.0, interval: float = 0.5) -> DatasetPublic:
        """Poll until validation ended (`ready` or `failed`)."""
        deadline = time.monotonic() + timeout
        while (dataset := self.get(ref)).status == "validating":
            if time.monotonic() > deadline:
                raise TimeoutError(f"dataset {ref} still validating after {timeout}s")
            time.sleep(interval)
        return dataset


class Jobs:
    """Every job of the organisation; `training=True` narrows to training jobs."""

    def __init__(self, client: Client, *, training: bool = False) -> None:
        self._client = client
        self._training = training

    def list(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Page[JobPublic]:
        return self._client.send(calls.list_jobs(kind, status, limit, after, training=self._training))

    def get(self, job_id: str) -> JobPublic:
        return self._client.send(calls.get_job(job_id))

    def cancel(self, job_id: str) -> JobPublic:
        return self._client.send(calls.cancel_job(job_id))

    def pause(self, job_id: str) -> JobPublic:
        return self._client.send(calls.pause_job(job_id))

    def resume(self, job_id: str) -> JobPublic:
        return self._client.send(calls.resume_job(job_id))

    def events(self, job_id: str, *, after: int | None = None, limit: int | None = None) -> JobEventList:
        return self._client.send(calls.job_events(job_id, after, limit))

    def stream_events(self, job_id: str, *, after: int | None = None) -> Iterator[JobEventPublic]:
        """Events as they happen (server-sent events), until the job ends."""
        params: dict[str, str | int] = {"stream": "true"}
        if after is not None:
            params["after"] = after
        parser = calls.EventStreamParser()
        try:
            with self._client._http.stream(
                "GET", f"/v1/jobs/{job_id}/events", params=params, timeout=None
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_for(response)
                for line in response.iter_lines():
                    yield from parser.feed([line])
                    if parser.done:
                        return
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Cannot reach {self._client._http.base_url}: {exc}") from exc

    def wait(self, job_id: str, timeout: float = 3600.0, interval: float = 0.5) -> JobPublic:
        """Poll until the job ends; returns it in its final state."""
        deadline = time.monotonic() + timeout
        while (job := self.get(job_id)).status not in FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout}s")
            time.sleep(interval)
        return job


class TrainingJobs(Jobs):
    def __init__(self, client: Client) -> None:
        super().__init__(client, training=True)

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
    ) -> JobPublic:
        body = calls.training_body(task, dataset, target, params, preprocessing, model, parent)
        return self._client.send(calls.create_training_job(body, idempotency_key))


class Registry:
    def __init__(self, client: Client) -> None:
        self._client = client

    def models(self, *, limit: int | None = None, after: str | None = None) -> Page[ModelPublic]:
        return self._client.send(calls.list_models(limit, after))

    def model(self, name: str) -> ModelPublic:
        return self._client.send(calls.get_model(name))

    def versions(
        self, name: str, *, limit: int | None = None, after: str | None = None
    ) -> Page[ModelVersionPublic]:
        return self._client.send(calls.list_versions(name, limit, after))

    def version(self, ref: str) -> ModelVersionPublic:
        """`name`, `name:3` or `name@alias`, with its manifest."""
        return self._client.send(calls.get_version(ref))

    def compare(self, refs: list[str]) -> Comparison:
        return self._client.send(calls.compare_versions(refs))

    def set_alias(self, name: str, alias: str, version: int) -> ModelPublic:
        return self._client.send(calls.set_alias(name, alias, version))

    def remove_alias(self, name: str, alias: str) -> ModelPublic:
        return self._client.send(calls.remove_alias(name, alias))

    def tag(self, ref: str, tags: dict[str, str | None]) -> ModelVersionPublic:
        return self._client.send(calls.tag_version(ref, tags))

    def delete(self, ref: str) -> ModelVersionPublic:
        return self._client.send(calls.delete_version(ref))

    def delete_model(self, name: str) -> ModelPublic:
        """The model with all its versions (409 `version_in_use` while any is listed or served)."""
        return self._client.send(calls.delete_model(name))

    def download(self, ref: str, dest: str | Path, progress: Progress | None = None) -> Path:
        """Save the version's artifact folder as a zip file at `dest`."""
        dest = Path(dest)
        try:
            with self._client._http.stream("GET", f"/v1/registry/versions/{ref}/download") as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_for(response)
                total, done = int(response.headers.get("content-length", 0)), 0
                with open(dest, "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Cannot reach {self._client._http.base_url}: {exc}") from exc
        return dest
