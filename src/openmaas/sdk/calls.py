"""What an SDK method does, as plain data: the requests it makes and how to read their answers.

A resource method returns a `Call` (one request), a `Download`, or a `Plan`: a generator that
yields such steps (and a `Sleep` between polls) and returns the method's result, e.g.

    current = yield from Call("GET", f"/v1/deployments/{name}", DeploymentPublic)

Nothing here touches the network: `senders.py` performs the steps, blocking for `Client` and
awaited for `AsyncClient`, so each method is written once for both.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from openmaas.sdk.errors import error_for
from openmaas.sdk.uploads import (
    Progress,
    async_file_chunks,
    async_form_chunks,
    file_chunks,
    form_chunks,
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Upload:
    """A file streamed as the request body; `progress(sent, total)` hears about each chunk. With
    `form`, the body is a multipart form of those text fields and the file as its `file` part."""

    file: Path
    content_type: str
    progress: Progress | None = None
    form: dict[str, str] | None = None
    boundary: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def header(self) -> str:
        return self.content_type if self.form is None else f"multipart/form-data; boundary={self.boundary}"

    def chunks(self) -> Iterator[bytes]:
        if self.form is None:
            return file_chunks(self.file, self.progress)
        return form_chunks(self.file, self.form, self.boundary, self.progress)

    def async_chunks(self) -> AsyncIterator[bytes]:
        if self.form is None:
            return async_file_chunks(self.file, self.progress)
        return async_form_chunks(self.file, self.form, self.boundary, self.progress)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request, and the type `T` its JSON answer is read into (an error status raises)."""

    method: str
    path: str
    result: Any  # the type T, e.g. Page[JobPublic]
    json: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)  # None values are left out
    idempotency_key: str | None = None
    upload: Upload | None = None

    def __iter__(self) -> Generator[Step, Any, T]:
        answer: T = yield self
        return answer

    def request(self, http: httpx.Client | httpx.AsyncClient, content: Any = None) -> httpx.Request:
        """The httpx request; `content` is the upload's body as the sender streams it."""
        headers = {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else {}
        if self.upload is not None:
            headers["Content-Type"] = self.upload.header
        params = {k: v for k, v in self.params.items() if v is not None}
        # A large upload takes as long as it takes; everything else has the client's timeout.
        timeout = None if self.upload is not None else httpx.USE_CLIENT_DEFAULT
        return http.build_request(
            self.method,
            self.path,
            json=self.json,
            params=params,
            headers=headers,
            content=content,
            timeout=timeout,
        )

    def parse(self, response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise error_for(response)
        adapter: TypeAdapter[T] = TypeAdapter(self.result)
        return adapter.validate_json(response.content)


def creating(path: str, result: Any, body: dict[str, Any], idempotency_key: str | None) -> Call[Any]:
    """A POST that creates something, under `idempotency_key` or a key made for this call: the
    server answers a retry with what the first attempt created, so a lost answer can be asked for
    again without creating the thing twice (`retries.py`)."""
    key = idempotency_key or f"openmaas-retry-{uuid.uuid4()}"
    return Call("POST", path, result, body, idempotency_key=key)


@dataclass(frozen=True)
class Download:
    """A GET whose body is written to `dest` (the result); `progress(received, total)`."""

    path: str
    dest: Path
    progress: Progress | None = None

    def __iter__(self) -> Generator[Step, Any, Path]:
        saved: Path = yield self
        return saved


@dataclass(frozen=True)
class Sleep:
    """Wait before the next step (polling)."""

    seconds: float


Step: TypeAlias = Call[Any] | Download | Sleep
Plan: TypeAlias = Generator[Step, Any, T]


class Steps(Protocol[T_co]):
    """What a resource method returns: a `Call`, a `Download` or a `Plan`, all iterable as steps."""

    def __iter__(self) -> Generator[Step, Any, T_co]: ...


def json_body(model: BaseModel) -> dict[str, Any]:
    """A request model as JSON, its unset (None) fields left out."""
    return model.model_dump(mode="json", exclude_none=True)
