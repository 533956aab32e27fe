"""What each datasets, jobs, training and registry SDK method sends and gets back, described once
for both clients (see `calls.py`), plus the server-sent-events parser for job event streams."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from openmaas.schemas.datasets import DatasetPublic
from openmaas.schemas.jobs import JobEventList, JobEventPublic, JobPublic
from openmaas.schemas.pages import Page
from openmaas.schemas.registry import Comparison, ModelPublic, ModelVersionPublic
from openmaas.sdk.calls import Call


def _page(limit: int | None, after: str | None, **extra: Any) -> dict[str, Any]:
    return {"limit": limit, "after": after, **extra}


def list_datasets(name: str | None, limit: int | None, after: str | None) -> Call[Page[DatasetPublic]]:
    return Call("GET", "/v1/datasets", Page[DatasetPublic], params=_page(limit, after, name=name))


def get_dataset(ref: str) -> Call[DatasetPublic]:
    return Call("GET", f"/v1/datasets/{ref}", DatasetPublic)


def list_jobs(
    kind: str | None, status: str | None, limit: int | None, after: str | None, *, training: bool = False
) -> Call[Page[JobPublic]]:
    if training:
        return Call("GET", "/v1/training_jobs", Page[JobPublic], params=_page(limit, after))
    return Call("GET", "/v1/jobs", Page[JobPublic], params=_page(limit, after, kind=kind, status=status))


def get_job(job_id: str) -> Call[JobPublic]:
    return Call("GET", f"/v1/jobs/{job_id}", JobPublic)


def cancel_job(job_id: str) -> Call[JobPublic]:
    return Call("POST", f"/v1/jobs/{job_id}/cancel", JobPublic)


def pause_job(job_id: str) -> Call[JobPublic]:
    return Call("POST", f"/v1/jobs/{job_id}/pause", JobPublic)


def resume_job(job_id: str) -> Call[JobPublic]:
    return Call("POST", f"/v1/jobs/{job_id}/resume", JobPublic)


def job_events(job_id: str, after: int | None, limit: int | None) -> Call[JobEventList]:
    return Call("GET", f"/v1/jobs/{job_id}/events", JobEventList, params={"after": after, "limit": limit})


def create_training_job(body: dict[str, Any], idempotency_key: str | None) -> Call[JobPublic]:
    return Call("POST", "/v1/training_jobs", JobPublic, body, idempotency_key=idempotency_key)


def training_body(
    task: str,
    dataset: str,
    target: str | None,
    params: dict[str, Any] | None,
    preprocessing: dict[str, Any] | None,
    model: str | None,
    parent: str | None,
) -> dict[str, Any]:
    body = {"task": task, "dataset": dataset, "target": target, "params": params or {}}
    body.update(preprocessing=preprocessing or {}, model=model, parent=parent)
    return {key: value for key, value in body.items() if value is not None}


def list_models(limit: int | None, after: str | None) -> Call[Page[ModelPublic]]:
    return Call("GET", "/v1/registry/models", Page[ModelPublic], params=_page(limit, after))


def get_model(name: str) -> Call[ModelPublic]:
    return Call("GET", f"/v1/registry/models/{name}", ModelPublic)


def list_versions(name: str, limit: int | None, after: str | None) -> Call[Page[ModelVersionPublic]]:
    return Call(
        "GET", f"/v1/registry/models/{name}/versions", Page[ModelVersionPublic], params=_page(limit, after)
    )


def get_version(ref: str) -> Call[ModelVersionPublic]:
    return Call("GET", f"/v1/registry/versions/{ref}", ModelVersionPublic)


def compare_versions(refs: list[str]) -> Call[Comparison]:
    return Call("GET", "/v1/registry/compare", Comparison, params={"refs": refs})


def set_alias(name: str, alias: str, version: int) -> Call[ModelPublic]:
    return Call("PUT", f"/v1/registry/models/{name}/aliases/{alias}", ModelPublic, {"version": version})


def remove_alias(name: str, alias: str) -> Call[ModelPublic]:
    return Call("DELETE", f"/v1/registry/models/{name}/aliases/{alias}", ModelPublic)


def tag_version(ref: str, tags: dict[str, str | None]) -> Call[ModelVersionPublic]:
    return Call("PATCH", f"/v1/registry/versions/{ref}", ModelVersionPublic, {"tags": tags})


def delete_version(ref: str) -> Call[ModelVersionPublic]:
    return Call("DELETE", f"/v1/registry/versions/{ref}", ModelVersionPublic)


def delete_model(name: str) -> Call[ModelPublic]:
    return Call("DELETE", f"/v1/registry/models/{name}", ModelPublic)


class EventStreamParser:
    """Turns the lines of a `text/event-stream` into job events; `done` turns true at the end."""

    def __init__(self) -> None:
        self.done = False
        self._kind = "message"
        self._data: list[str] = []

    def feed(self, lines: Iterable[str]) -> list[JobEventPublic]:
        found: list[JobEventPublic] = []
        for line in lines:
            if line.startswith(":"):
                continue
            if line:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    self._kind = value
                elif field == "data":
                    self._data.append(value)
                continue
            if self._kind == "done":
                self.done = True
            elif self._data:
                found.append(JobEventPublic.model_validate(json.loads("\n".join(self._data))))
            self._kind, self._data = "message", []
        return found
