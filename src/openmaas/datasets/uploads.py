"""Dataset uploads: stream the request body through `openmaas.datasets.ingest` (size limit, hash,
format and safety checks) straight into the artifact store, then register the version — or hand
back the existing one when the same bytes were uploaded under that name before.

The body is never held whole in memory: ingest runs in a worker thread and pulls each chunk from
the event loop as it arrives. Nothing half-written stays behind: the version's folder goes when
anything fails, and when the same bytes were there already. Knows nothing of HTTP: the caller
hands in the body as chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import anyio.from_thread
from sqlalchemy.exc import IntegrityError

from openmaas import errors
from openmaas.clock import Clock
from openmaas.datasets import IngestedFile, ingest
from openmaas.datasets import service as dataset_service
from openmaas.datasets.tables import Dataset
from openmaas.db.database import Database
from openmaas.ids import new_id
from openmaas.schemas.datasets import DatasetPublic
from openmaas.storage import ArtifactStore, space_for


def blocking_chunks(body: AsyncIterator[bytes]) -> Iterator[bytes]:
    """The chunks of a request body, for a worker thread started with `anyio.to_thread`: each is
    pulled from the event loop as it arrives, so the body is never held whole."""

    async def next_chunk() -> bytes:
        return await body.__anext__()

    while True:
        try:
            chunk: bytes = anyio.from_thread.run(next_chunk)
        except StopAsyncIteration:
            return
        if chunk:
            yield chunk


@dataclass(frozen=True)
class UploadResult:
    dataset: DatasetPublic
    created: bool  # False: identical bytes were already this name's version


@dataclass(frozen=True)
class DatasetUploads:
    """Uploads into `store` and `db`, dated by `clock`: at most `max_bytes` each, validated by a
    job with `job_max_attempts` attempts."""

    store: ArtifactStore
    db: Database
    clock: Clock
    max_bytes: int
    job_max_attempts: int

    async def receive(
        self,
        org_id: str,
        body: AsyncIterator[bytes],
        *,
        name: str,
        filename: str | None,
        target: str | None,
        declared_bytes: int | None = None,
    ) -> UploadResult:
        """Store `body` as the next version of dataset `name` of `org_id` and queue its validation,
        or return the version that holds these bytes already. A body that says beforehand it is
        `declared_bytes` long, over the limit, is refused before any of it is read."""
        dataset_service.check_name(name)
        if declared_bytes is not None and declared_bytes > self.max_bytes:
            raise errors.PayloadTooLarge(
                f"The upload is {declared_bytes} bytes; a dataset may be at most {self.max_bytes} bytes.",
                param="file",
            )
        dataset_id = new_id("ds_")
        relative = self.store.dataset_dir(org_id, dataset_id)

        def ingest_body() -> IngestedFile:
            # Published (the whole folder at once) only once ingest accepted all of it.
            with space_for("this upload", param="file"), self.store.staged(relative) as folder:
                return ingest(blocking_chunks(body), folder, filename=filename, max_bytes=self.max_bytes)

        try:
            ingested = await anyio.to_thread.run_sync(ingest_body)
            result = await anyio.to_thread.run_sync(
                lambda: self._register(org_id, dataset_id, name, filename, target, ingested, relative)
            )
        except BaseException:
            self.store.remove(relative)
            raise
        if not result.created:
            self.store.remove(relative)
        return result

    def _register(
        self,
        org_id: str,
        dataset_id: str,
        name: str,
        filename: str | None,
        target: str | None,
        ingested: IngestedFile,
        relative: str,
    ) -> UploadResult:
        for attempt in range(3):
            try:
                with self.db.session() as session:
                    existing = dataset_service.find_same_bytes(session, org_id, name, ingested.sha256)
                    if existing is not None:
                        return UploadResult(dataset_service.dataset_public(existing), created=False)
                    row: Dataset = dataset_service.register_upload(
                        session,
                        dataset_id=dataset_id,
                        org_id=org_id,
                        name=name,
                        filename=filename,
                        ingested=ingested,
                        path=f"{relative}/{ingested.path.name}",
                        target=target,
                        now=self.clock.now(),
                        max_attempts=self.job_max_attempts,
                    )
                    return UploadResult(dataset_service.dataset_public(row), created=True)
            except IntegrityError:
                # A concurrent upload of the same name took this version number or these bytes.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
