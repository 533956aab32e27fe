"""Receipts wake their waiters, threads and coroutines alike, when the writer resolves their batch,
keep the first outcome, and answer 503 when the ledger does not write them in time."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import pytest

from openmaas import errors
from openmaas.metering.events import PricedLine, UsageEvent
from openmaas.metering.receipts import Completions, Receipt, Written


def _receipt(completions: Completions, event_id: str = "req_1", timeout: float = 5.0) -> Receipt:
    event = UsageEvent(event_id, "org_1", {"requests": 1}, datetime(2026, 11, 23, tzinfo=UTC))
    return Receipt(event, [PricedLine("requests", 1, 250, "pb_1")], completions, timeout)


def test_a_thread_waiting_on_a_receipt_wakes_when_its_batch_is_resolved() -> None:
    completions = Completions()
    waiting, other = _receipt(completions), _receipt(completions, "req_2")
    got: list[Written] = []
    waiter = threading.Thread(target=lambda: got.append(waiting.wait()))
    waiter.start()
    time.sleep(0.05)
    completions.resolve([other], [Written("req_2", True, 250)])  # another batch: still waiting
    time.sleep(0.05)
    assert got == [] and waiting.outcome is None
    completions.resolve([waiting], [Written("req_1", True, 250)])
    waiter.join(5)
    assert got == [Written("req_1", True, 250)] and waiting.cost_micros == 250
    completions.resolve([waiting], [Written("req_1", False, 0)])  # a late duplicate changes nothing
    assert waiting.wait() == Written("req_1", True, 250)


def test_coroutines_awaiting_a_receipt_are_resolved_from_the_writer_thread() -> None:
    completions = Completions()
    receipt = _receipt(completions)

    async def main() -> list[Written]:
        first, second = (asyncio.ensure_future(receipt.wait_async()) for _ in range(2))
        await asyncio.sleep(0.02)
        writer = threading.Thread(target=completions.resolve, args=([receipt], [Written("req_1", True, 250)]))
        writer.start()
        done = await asyncio.gather(first, second)
        writer.join()
        return [*done, await receipt.wait_async()]

    assert asyncio.run(main()) == [Written("req_1", True, 250)] * 3


def test_a_receipt_not_written_in_time_answers_503() -> None:
    receipt = _receipt(Completions(), timeout=0.05)
    with pytest.raises(errors.ServiceUnavailable):
        receipt.wait()
    with pytest.raises(errors.ServiceUnavailable):
        asyncio.run(receipt.wait_async())


def test_waits_time_out_by_the_loops_check_and_answered_ones_are_not_failed() -> None:
    completions = Completions()
    answered, stuck = _receipt(completions, timeout=0.05), _receipt(completions, timeout=0.05)

    async def main() -> list[Written | BaseException]:
        first = asyncio.ensure_future(answered.wait_async())
        second = asyncio.ensure_future(stuck.wait_async())
        await asyncio.sleep(0)
        completions.resolve([answered], [Written("req_1", True, 250)])
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert completions._expiries == {}  # the check stops once nobody waits
        return results

    done, failed = asyncio.run(main())
    assert done == Written("req_1", True, 250)
    assert isinstance(failed, errors.ServiceUnavailable)
