"""The metering call site for served requests: every inference route passes the usage gate here.

Before any work, `admit` checks the key's and organisation's rate limits and holds the request's
worst-case cost against its budget (429 or 402 when it can't); `record` then writes exactly one
usage event keyed by the request id with what was actually served — streamed or not, finished or
dropped by its client — and settles the hold; `abandon` releases it when nothing was served.

A response that completes waits until its usage is durable (`durable()`), so a crash never loses
an acknowledged request's usage; a dropped stream is metered for what was generated without
waiting, since nobody is left to answer.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from openmaas.bootstrap import Platform
from openmaas.metering.gate import Admission
from openmaas.metering.ledger import Receipt
from openmaas.serving.directory import ServedModel
from openmaas.tenancy.auth import Principal


class RequestUsage:
    def __init__(
        self, platform: Platform, principal: Principal, served: ServedModel, request_id: str
    ) -> None:
        self._platform = platform
        self._principal = principal
        self._served = served
        self._request_id = request_id
        self._admission: Admission | None = None
        self._receipt: Receipt | None = None
        self._done = False

    async def admit(self, input_tokens: int, worst_output_tokens: int) -> dict[str, str]:
        """Rate-limit and hold the worst case; returns the `x-ratelimit-*` headers for the response."""
        return await self.admit_units(
            {"requests": 1, "input_tokens": input_tokens, "output_tokens": worst_output_tokens}
        )

    async def admit_units(self, worst: dict[str, int]) -> dict[str, str]:
        """`admit` for any units (e.g. `{"requests": 1, "rows": n}` for predictions): from memory
        on the event loop when it can be, in a thread when it needs the database."""
        headers = self.admit_from_memory(worst)
        if headers is None:
            headers = {}
            self._admission = await run_in_threadpool(
                self._platform.gate.admit, **self._admission_args(worst, headers)
            )
        return headers

    def admit_from_memory(self, worst: dict[str, int]) -> dict[str, str] | None:
        """`admit_units` when it needs no I/O (the common case); None, with nothing done, when it
        does (then await `admit_units`). Raises 429/402 like it."""
        headers: dict[str, str] = {}
        self._admission = self._platform.gate.admit_nowait(**self._admission_args(worst, headers))
        return None if self._admission is None else headers

    def _admission_args(self, worst: dict[str, int], headers: dict[str, str]) -> dict[str, Any]:
        return {
            "org_id": self._principal.require_org(),
            "api_key_id": self._principal.key_id,
            "request_id": self._request_id,
            "worst_case": worst,
            "model": self._served.version_id or None,
            "deployment": self._served.deployment_id or None,
            "headers": headers,
        }

    def record(self, input_tokens: int, output_tokens: int) -> None:
        """Write the request's one usage event and settle its hold; later calls do nothing."""
        self.record_units({"requests": 1, "input_tokens": input_tokens, "output_tokens": output_tokens})

    def record_units(self, actual: dict[str, int]) -> None:
        """`record` for any units; later calls do nothing."""
        if self._done or self._admission is None:
            return
        self._done = True
        self._receipt = self._platform.gate.complete(self._admission, actual)

    def abandon(self) -> None:
        """Nothing was served: release the hold, write no usage."""
        if self._done or self._admission is None:
            return
        self._done = True
        self._platform.gate.abandon(self._admission)

    async def durable(self) -> None:
        """Wait until the recorded event is written (group commit keeps this short)."""
        if self._receipt is not None:
            await self._receipt.wait_async()  # no thread parked while the batch is written
