"""Receipts: what `UsageLedger.record` hands back, to wait on until the event is durable.

All receipts of a ledger share one `Completions` (a condition variable): the writer resolves a
whole batch under it and wakes the waiters once, instead of one `concurrent.futures.Future` per
event (a condition, a lock and two lists each, which the garbage collector then scans over and
over while thousands are in flight). Async waiters register their event-loop future on the receipt
and are resolved with `call_soon_threadsafe`, so no thread is parked for them; their timeouts are
kept by one periodic check per event loop rather than a timer per request.

A request that has not answered yet waits with `withdraw=True`: when its wait times out (the
database is down), its event is withdrawn — the writer drops it, it is never written — so the
request is refused with 503 and not billed. An event can be withdrawn only while no write is under
way (`begin_attempt` … `end_attempt`/`resolve`): one that may be committing this instant is waited
for a little longer instead, so that what the client is told and what is billed always agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from openmaas import errors
from openmaas.metering.events import PricedLine, UsageEvent


@dataclass(frozen=True, slots=True)
class Written:
    """What the writer did with one event: `new` is False when its id was already in the ledger."""

    event_id: str
    new: bool
    cost_micros: int


class Completions:
    """The condition every receipt of one ledger waits on; `resolve` is the writer's side."""

    __slots__ = ("_attempting", "_condition", "_expiries", "_withdrawn")

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._expiries: dict[asyncio.AbstractEventLoop, _Expiry] = {}
        self._attempting = False  # the writer is writing a batch: nothing may be withdrawn
        self._withdrawn = 0  # receipts withdrawn that the writer has not dropped yet

    def expiry(self, loop: asyncio.AbstractEventLoop) -> _Expiry:
        """The timeout keeper of `loop` (called on that loop)."""
        expiry = self._expiries.get(loop)
        if expiry is None:
            expiry = self._expiries[loop] = _Expiry(loop, lambda: self._expiries.pop(loop, None))
        return expiry

    def begin_attempt(self, batch: list[Receipt]) -> tuple[list[Receipt], list[Receipt]]:
        """The writer is about to write `batch`: from now until `end_attempt` or `resolve` none of
        it can be withdrawn. Returns the receipts to write and those withdrawn before (to resolve
        with the batch, as not written)."""
        with self._condition:
            self._attempting = True
            if not self._withdrawn:  # the common case: nothing to look for
                return batch, []
            live = [receipt for receipt in batch if not receipt._withdrawn]
            dropped = [receipt for receipt in batch if receipt._withdrawn]
            self._withdrawn -= len(dropped)
            return live, dropped

    def end_attempt(self) -> None:
        """The write failed: its receipts may be withdrawn again until the next attempt."""
        with self._condition:
            self._attempting = False

    def try_withdraw(self, receipt: Receipt) -> bool:
        """Withdraw the event of `receipt` unless it is written or may be being written; True when
        it was (it will never be written)."""
        with self._condition:
            if receipt._outcome is not None or self._attempting:
                return False
            if not receipt._withdrawn:
                receipt._withdrawn = True
                self._withdrawn += 1
            return True

    def resolve(self, receipts: Sequence[Receipt], outcomes: Sequence[Written]) -> None:
        """Mark a written batch durable and wake whoever waits on any of it: threads with one
        notify, each event loop with one callback for all of its waiters."""
        wakeups: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Written], Written]]] = {}
        with self._condition:
            self._attempting = False
            for receipt, outcome in zip(receipts, outcomes, strict=True):
                if receipt._outcome is None:
                    receipt._outcome = outcome
                    for loop, future in receipt._async_waiters or ():
                        wakeups.setdefault(loop, []).append((future, outcome))
            self._condition.notify_all()
        for loop, results in wakeups.items():
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_set_results, results)


class Receipt:
    """A handle on one queued event. `wait()` blocks until it is durable (or raises on timeout)."""

    __slots__ = (
        "_async_waiters",
        "_completions",
        "_outcome",
        "_timeout",
        "_withdrawn",
        "cost_micros",
        "event",
        "lines",
    )

    def __init__(
        self,
        event: UsageEvent,
        lines: Sequence[PricedLine],
        completions: Completions,
        timeout: float = 30.0,
    ) -> None:
        self.event = event
        self.lines = tuple(lines)
        self.cost_micros = sum(line.cost_micros for line in self.lines)  # read several times a write
        self._completions = completions
        self._timeout = timeout  # the default wait: `OPENMAAS_METERING_WAIT_TIMEOUT_S`
        self._outcome: Written | None = None
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Written]]] | None = None
        self._withdrawn = False

    @property
    def outcome(self) -> Written | None:
        """What was written, once durable; None before."""
        return self._outcome

    def wait(self, timeout: float | None = None) -> Written:
        outcome = self._outcome
        if outcome is not None:
            return outcome
        condition = self._completions._condition
        with condition:
            if not condition.wait_for(lambda: self._outcome is not None, timeout or self._timeout):
                raise _too_late()
        assert self._outcome is not None
        return self._outcome

    async def wait_async(self, timeout: float | None = None, *, withdraw: bool = False) -> Written:
        """`wait` for asyncio code: no thread is parked while the batch is written.

        `withdraw`: at the timeout, withdraw the event too, so that it is never written (for a
        request not answered yet, which is then refused); without it the event is still written
        later (usage that was served)."""
        if self._outcome is not None:
            return self._outcome
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Written] = loop.create_future()
        with self._completions._condition:
            if self._outcome is not None:
                return self._outcome
            if self._async_waiters is None:
                self._async_waiters = []
            self._async_waiters.append((loop, future))
        withdrawing = self if withdraw else None
        if timeout is None or timeout == self._timeout:
            # The usual wait: its deadline joins the loop's queue, in order (no timer of its own).
            self._completions.expiry(loop).add(loop.time() + self._timeout, future, withdrawing)
            return await future
        timer = loop.call_later(timeout, _expire, future, withdrawing)
        try:
            return await future
        finally:
            timer.cancel()


class _Expiry:
    """Fails the waits of one event loop that pass their deadline, checked every `_CHECK_S`.

    Waits with the default timeout join in deadline order, so a check pops the expired (and the
    already answered) from the front and stops at the first still waiting in time. The queue holds
    at most one timeout's worth of requests; the check runs only while it is not empty."""

    __slots__ = ("_armed", "_loop", "_on_empty", "_queue")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_empty: Callable[[], object]) -> None:
        self._loop = loop
        self._on_empty = on_empty
        # (deadline, future, the receipt to withdraw at the deadline or None)
        self._queue: deque[tuple[float, asyncio.Future[Written], Receipt | None]] = deque()
        self._armed = False

    def add(self, deadline: float, future: asyncio.Future[Written], withdraw: Receipt | None) -> None:
        self._queue.append((deadline, future, withdraw))
        if not self._armed:
            self._armed = True
            self._loop.call_later(_CHECK_S, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        queue = self._queue
        busy = []  # expired, but their event may be being written: asked again at the next check
        while queue and (queue[0][1].done() or queue[0][0] <= now):
            entry = queue.popleft()
            future, receipt = entry[1], entry[2]
            if future.done():
                continue
            if receipt is None or receipt._completions.try_withdraw(receipt):
                future.set_exception(_too_late(withdrawn=receipt is not None))
            else:
                busy.append(entry)
        queue.extendleft(reversed(busy))
        if queue:
            self._loop.call_later(_CHECK_S, self._check)
        else:
            self._armed = False
            self._on_empty()


_CHECK_S = 0.25


def _set_results(results: list[tuple[asyncio.Future[Written], Written]]) -> None:
    for future, outcome in results:
        if not future.done():  # a waiter that gave up (timeout, cancellation) is skipped
            future.set_result(outcome)


def _expire(future: asyncio.Future[Written], withdraw: Receipt | None) -> None:
    if future.done():
        return
    if withdraw is None or withdraw._completions.try_withdraw(withdraw):
        future.set_exception(_too_late(withdrawn=withdraw is not None))
    else:  # may be being written this instant: ask again shortly
        future.get_loop().call_later(_CHECK_S, _expire, future, withdraw)


def _too_late(*, withdrawn: bool = False) -> errors.ServiceUnavailable:
    if withdrawn:
        return errors.ServiceUnavailable(
            "Usage could not be recorded in time; the request was not completed and is not billed.",
            code="metering_unavailable",
            retry_after=5,
        )
    return errors.ServiceUnavailable(
        "Usage could not be recorded in time; the request was not completed.", retry_after=5
    )
