"""SDK resource for datasets: `client.datasets.upload("data.csv", name="churn")`, then
`client.datasets.wait_validated("churn")`."""

from __future__ import annotations

import time
from pathlib import Path

from openmaas.schemas.datasets import DatasetPublic
from openmaas.schemas.pages import Page
from openmaas.sdk.calls import Call, Plan, Sleep, Upload
from openmaas.sdk.resource import Resource, S, endpoint
from openmaas.sdk.uploads import Progress


def _get(ref: str) -> Call[DatasetPublic]:
    return Call("GET", f"/v1/datasets/{ref}", DatasetPublic)


class Datasets(Resource[S]):
    @endpoint
    def upload(
        self, path: str | Path, *, name: str, target: str | None = None, progress: Progress | None = None
    ) -> Call[DatasetPublic]:
        """Stream a file as a new version of dataset `name` (or get the version with the same bytes)."""
        path = Path(path)
        params = {"name": name, "filename": path.name, "target": target}
        upload = Upload(path, "application/octet-stream", progress)
        return Call("POST", "/v1/datasets", DatasetPublic, params=params, upload=upload)

    @endpoint
    def list(
        self, *, name: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Call[Page[DatasetPublic]]:
        params = {"name": name, "limit": limit, "after": after}
        return Call("GET", "/v1/datasets", Page[DatasetPublic], params=params)

    @endpoint
    def get(self, ref: str) -> Call[DatasetPublic]:
        """By id, `name` (the latest version) or `name:version`."""
        return _get(ref)

    @endpoint
    def wait_validated(self, ref: str, timeout: float = 600.0, interval: float = 0.5) -> Plan[DatasetPublic]:
        """Poll until validation ended (`ready` or `failed`)."""
        deadline = time.monotonic() + timeout
        while (dataset := (yield from _get(ref))).status == "validating":
            if time.monotonic() > deadline:
                raise TimeoutError(f"dataset {ref} still validating after {timeout}s")
            yield Sleep(interval)
        return dataset
