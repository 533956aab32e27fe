"""The metering call site for served requests: every inference use-case passes the usage gate here.

Before any work, `admit_from_memory` (or, when that needs the database, `admit_in_thread`) checks
the key's and organisation's rate limits and holds the request's worst-case cost against its budget
(429 or 402 when it can't); `record` then writes exactly one usage event keyed by the request id
with what was actually served — streamed or not, finished or dropped by its client — and settles
the hold; `abandon` releases it when nothing was served.

A response that completes waits until its usage is durable (`durable()`), so a crash never loses
an acknowledged request's usage; a dropped stream is metered for what was generated without
waiting, since nobody is left to answer.
"""

from __future__ import annotations

from functools import partial

from anyio import to_thread

from openmaas import logs
from openmaas.metering.gate import Admission, UsageGate
from openmaas.metering.receipts import Receipt
from openmaas.serving.directory import ServedModel
from openmaas.tenancy.auth import Principal
from openmaas.units import BATCH_UNITS

# Quantities per unit (`requests`, `rows`, `input_tokens`, `output_tokens`).
Units = dict[str, int]


class RequestUsage:
    __slots__ = ("_admission", "_done", "_gate", "_principal", "_receipt", "_request_id", "_served")

    def __init__(self, gate: UsageGate, principal: Principal, served: ServedModel, request_id: str) -> None:
        self._gate = gate
        self._principal = principal
        self._served = served
        self._request_id = request_id
        self._admission: Admission | None = None
        self._receipt: Receipt | None = None
        self._done = False

    def admit_from_memory(self, worst: Units) -> dict[str, str] | None:
        """Rate-limit and hold the worst case without I/O (the common case); returns the
        `x-ratelimit-*` headers for the response, or None, with nothing done, when the decision
        needs the database (then await `admit_in_thread`). Raises 429/402."""
        headers: dict[str, str] = {}
        # Arguments spelt out rather than built once for both calls: this runs on every request.
        self._admission = self._gate.admit_nowait(
            self._principal.require_org(),
            self._principal.key_id,
            self._request_id,
            worst_case=worst,
            model=self._served.version_id or None,
            deployment=self._served.deployment_id or None,
            headers=headers,
        )
        return None if self._admission is None else headers

    async def admit_in_thread(self, worst: Units) -> dict[str, str]:
        """`admit_from_memory` for a decision that reads or writes the database: in a thread."""
        headers: dict[str, str] = {}
        admit = partial(
            self._gate.admit,
            self._principal.require_org(),
            self._principal.key_id,
            self._request_id,
            worst_case=worst,
            model=self._served.version_id or None,
            deployment=self._served.deployment_id or None,
            headers=headers,
        )
        self._admission = await to_thread.run_sync(admit)
        return headers

    def record(self, input_tokens: int, output_tokens: int) -> None:
        """`record_units` for a completion's tokens."""
        self.record_units({"requests": 1, "input_tokens": input_tokens, "output_tokens": output_tokens})

    def record_units(self, actual: Units) -> None:
        """Write the request's one usage event and settle its hold; later calls do nothing."""
        if self._done or self._admission is None:
            return
        self._done = True
        self._receipt = self._gate.complete(self._admission, actual)
        logs.note_usage(actual)  # for the request's log line

    def failed(self) -> None:
        """The run failed on the server's side: count it (the error rate), whatever was served."""
        if self._admission is not None:
            self._gate.failed(self._admission)

    def abandon(self) -> None:
        """Nothing was served: release the hold, write no usage; after `record`, does nothing."""
        if self._done or self._admission is None:
            return
        self._done = True
        self._gate.abandon(self._admission)

    async def durable(self, *, withdraw: bool = False) -> None:
        """Wait until the recorded event is written (group commit keeps this short).

        `withdraw`, for a response not begun yet: if the wait runs out (503), the event is
        withdrawn, never written, so the refused request is not billed."""
        if self._receipt is not None:
            # No thread parked while the batch is written.
            await self._receipt.wait_async(withdraw=withdraw)


class BatchUsage(RequestUsage):
    """A batch line's metering: its tokens in the batch units (priced apart, so batch work can be
    discounted), admitted outside the rate limits of live traffic (a batch paces itself), its
    worst case held against the budget like any request's."""

    __slots__ = ()

    def admit_from_memory(self, worst: Units) -> dict[str, str] | None:
        return None  # `admit_in_thread`, which can skip the rate limits

    async def admit_in_thread(self, worst: Units) -> dict[str, str]:
        admit = partial(
            self._gate.admit,
            self._principal.require_org(),
            self._principal.key_id,
            self._request_id,
            worst_case=batch_units(worst),
            model=self._served.version_id or None,
            deployment=self._served.deployment_id or None,
            rate_limited=False,
        )
        self._admission = await to_thread.run_sync(admit)
        return {}

    def record_units(self, actual: Units) -> None:
        super().record_units(batch_units(actual))


def batch_units(units: Units) -> Units:
    """`units` with live tokens renamed to the batch units."""
    return {BATCH_UNITS.get(unit, unit): quantity for unit, quantity in units.items()}
