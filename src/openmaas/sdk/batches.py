"""SDK resource for OpenAI's batches: `client.batches.create(input_file_id="file-…",
endpoint="/v1/chat/completions")`, then `wait`, `get`, `list`, `cancel`; the output and error
files are read with `client.files.download`."""

from __future__ import annotations

import time

from openmaas.schemas.batches import ENDED_STATUSES, BatchPublic
from openmaas.schemas.pages import Page
from openmaas.sdk.calls import Call, Plan, Sleep, creating
from openmaas.sdk.resource import Resource, S, endpoint

_PATH = "/v1/batches"


def _get(batch_id: str) -> Call[BatchPublic]:
    return Call("GET", f"{_PATH}/{batch_id}", BatchPublic)


class Batches(Resource[S]):
    @endpoint
    def create(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Call[BatchPublic]:
        """A batch of the requests in a file uploaded with purpose `batch`; one whose lines have
        problems comes back `failed`, each problem named by line in `errors`."""
        body = {"input_file_id": input_file_id, "endpoint": endpoint, "completion_window": completion_window}
        if metadata is not None:
            body["metadata"] = metadata  # type: ignore[assignment]
        return creating(_PATH, BatchPublic, body, idempotency_key)

    @endpoint
    def list(self, *, limit: int | None = None, after: str | None = None) -> Call[Page[BatchPublic]]:
        return Call("GET", _PATH, Page[BatchPublic], params={"limit": limit, "after": after})

    @endpoint
    def get(self, batch_id: str) -> Call[BatchPublic]:
        return _get(batch_id)

    @endpoint
    def cancel(self, batch_id: str) -> Call[BatchPublic]:
        return Call("POST", f"{_PATH}/{batch_id}/cancel", BatchPublic)

    @endpoint
    def wait(self, batch_id: str, timeout: float = 86_400.0, interval: float = 1.0) -> Plan[BatchPublic]:
        """Poll until the batch ended (completed, failed, expired or cancelled)."""
        deadline = time.monotonic() + timeout
        while (batch := (yield from _get(batch_id))).status not in ENDED_STATUSES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} still {batch.status} after {timeout}s")
            yield Sleep(interval)
        return batch
