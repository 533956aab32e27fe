"""The metering call site for served requests: every inference route reports its usage here,
exactly once per request (the request id is the event's key), when its work ends — streamed or
not, finished or dropped by its client.

A response that completes waits until its usage is durable (`durable()`), so a crash never loses
an acknowledged request's usage; a dropped stream is metered for what was generated without
waiting, since nobody is left to answer.
"""

from __future__ import annotations

import asyncio

from openmaas.bootstrap import Platform
from openmaas.metering.events import UsageEvent
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
        self._receipt: Receipt | None = None

    def record(self, input_tokens: int, output_tokens: int) -> None:
        """Queue the request's one usage event; later calls do nothing."""
        if self._receipt is not None or self._principal.org_id is None:
            return
        event = UsageEvent(
            event_id=self._request_id,
            org_id=self._principal.org_id,
            quantities={"requests": 1, "input_tokens": input_tokens, "output_tokens": output_tokens},
            occurred_at=self._platform.clock.now(),
            api_key_id=self._principal.key_id,
            model=self._served.version_id or None,
            deployment=self._served.deployment_id or None,
        )
        self._receipt = self._platform.meter.record(event)

    async def durable(self) -> None:
        """Wait until the recorded event is written (group commit keeps this short)."""
        if self._receipt is not None:
            await asyncio.to_thread(self._receipt.wait)
