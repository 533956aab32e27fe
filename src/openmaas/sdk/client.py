"""The clients: `Client(base_url, api_key)` (blocking) and `AsyncClient` (awaited), with the same
resources and methods: `client.admin.organizations.create("acme")`. Each retries what it may
(`retries.py`) up to `max_retries` times, 2 unless set.

Both are an `Api` over their own sender; only opening and closing the HTTP connection differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from openmaas.schemas.billing import Credits, CreditTransaction, UsageReport
from openmaas.schemas.pages import Page
from openmaas.schemas.tenancy import Caller
from openmaas.sdk.batches import Batches
from openmaas.sdk.billing import AdminBilling, Invoices, Marketplace
from openmaas.sdk.calls import Call, Plan, Upload
from openmaas.sdk.datasets import Datasets
from openmaas.sdk.deployments import Deployments
from openmaas.sdk.files import Files
from openmaas.sdk.fine_tuning import FineTuning
from openmaas.sdk.jobs import Jobs, TrainingJobs
from openmaas.sdk.optimizations import Optimizations
from openmaas.sdk.registry import Registry
from openmaas.sdk.resource import Resource, S, endpoint
from openmaas.sdk.retries import Retries
from openmaas.sdk.senders import AsyncSender, SyncSender
from openmaas.sdk.tenancy import ApiKeys, AuditLog, Organizations
from openmaas.sdk.uploads import Progress, zipped_folder

DEFAULT_URL = "http://127.0.0.1:8000"
Item = TypeVar("Item")


class Admin(Resource[S]):
    """Operator calls; the client's key must hold the `operator` scope."""

    def __init__(self, sender: S) -> None:
        super().__init__(sender)
        self.organizations = Organizations(sender)
        self.audit_log = AuditLog(sender, admin=True)
        self.billing = AdminBilling(sender)

    def api_keys(self, org: str) -> ApiKeys[S]:
        """The keys of organisation `org` (id or name)."""
        return ApiKeys(self._sender, org=org)


class Api(Resource[S]):
    """Everything a client can call: the methods below and one attribute per resource."""

    def __init__(self, sender: S) -> None:
        super().__init__(sender)
        self.api_keys = ApiKeys(sender, org=None)
        self.audit_log = AuditLog(sender, admin=False)
        self.admin = Admin(sender)
        self.invoices = Invoices(sender)
        self.marketplace = Marketplace(sender)
        self.datasets = Datasets(sender)
        self.files = Files(sender)
        self.fine_tuning = FineTuning(sender)
        self.batches = Batches(sender)
        self.jobs = Jobs(sender)
        self.training_jobs = TrainingJobs(sender)
        self.registry = Registry(sender)
        self.deployments = Deployments(sender)
        self.optimizations = Optimizations(sender)

    @endpoint
    def me(self) -> Call[Caller]:
        return Call("GET", "/v1/me", Caller)

    @endpoint
    def usage(
        self,
        *,
        group_by: list[str] | None = None,
        granularity: str = "bucket",
        start: datetime | None = None,
        end: datetime | None = None,
        model: str | None = None,
        api_key_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Call[UsageReport]:
        """Usage summed by `group_by` (day, model, deployment, api_key_id, unit), or single events."""
        params = {
            "group_by": ",".join(group_by) if group_by else None,
            "granularity": granularity,
            "start": start.isoformat() if start else None,
            "end": end.isoformat() if end else None,
            "model": model,
            "api_key_id": api_key_id,
            "limit": limit,
            "after": after,
        }
        return Call("GET", "/v1/usage", UsageReport, params=params)

    @endpoint
    def credits(self) -> Call[Credits]:
        return Call("GET", "/v1/credits", Credits)

    @endpoint
    def credit_transactions(
        self, *, limit: int | None = None, after: str | None = None
    ) -> Call[Page[CreditTransaction]]:
        params = {"limit": limit, "after": after}
        return Call("GET", "/v1/credits/transactions", Page[CreditTransaction], params=params)

    @endpoint
    def models(self) -> Call[dict[str, Any]]:
        """The OpenAI-style list of deployed models (`GET /v1/models`)."""
        return Call("GET", "/v1/models", dict[str, Any])

    @endpoint
    def import_model(
        self, folder: str | Path, name: str, *, progress: Progress | None = None, task: str | None = None
    ) -> Plan[dict[str, Any]]:
        """Upload a Hugging Face model folder (zipped on the way), a `.onnx` file or a `.gguf` file
        (llama.cpp's format: a Llama- or Qwen2-family LLM) as a new version of model `name`."""
        path = Path(folder)
        suffix = path.suffix.lower()
        if path.is_file() and suffix in (".onnx", ".gguf"):
            params = {"name": name, "format": suffix[1:], "task": task if suffix == ".onnx" else None}
            return (yield from _import(path, "application/octet-stream", params, progress))
        if not path.is_dir():
            raise ValueError(
                f"{path} is neither a model folder nor a .onnx or .gguf file: import a Hugging Face model "
                "folder (config.json, safetensors weights, tokenizer), an ONNX file or a GGUF file"
            )
        with zipped_folder(path) as archive:
            return (yield from _import(archive, "application/zip", {"name": name}, progress))


def _import(
    file: Path, content_type: str, params: dict[str, Any], progress: Progress | None
) -> Call[dict[str, Any]]:
    upload = Upload(file, content_type, progress)
    return Call("POST", "/v1/registry/imports", dict[str, Any], params=params, upload=upload)


class Client(Api[SyncSender]):
    """The blocking client; use it as a context manager, or `close()` it."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        super().__init__(SyncSender(self._http, Retries(max_retries)))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient(Api[AsyncSender]):
    """The asyncio client: the same methods as `Client`, awaited; `async with` it, or `await close()`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        super().__init__(AsyncSender(self._http, Retries(max_retries)))

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


def iterate(fetch: Callable[..., Page[Item]], limit: int | None = None) -> Iterator[Item]:
    """Every item of a paginated list, page after page: `iterate(client.api_keys.list)`."""
    after: str | None = None
    while True:
        page = fetch(limit=limit, after=after)
        yield from page.data
        if not page.has_more:
            return
        after = page.last_id
