"""The dynamic batcher with a fake model: merging, order, per-request errors, a bounded queue,
deadlines, dropped clients, replicas, and draining on close."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from openmaas import errors
from openmaas.serving.batcher import Batcher, ClientGone, ReplicaClosed
from openmaas.serving.signatures import InvalidRow


class FakeModel:
    """Doubles numbers after `delay` seconds; a row "bad" fails the batch it is in."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[list[Any]] = []
        self.replicas: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, replica: int, rows: list[Any], options: list[Any]) -> Sequence[Any]:
        self.gate.wait(5)
        self.batches.append(list(rows))
        self.replicas.add(replica)
        time.sleep(self.delay)
        if "bad" in rows:
            raise errors.ValidationFailed("bad row", param="inputs")
        return [(row * 2, option) for row, option in zip(rows, options, strict=True)]


def test_concurrent_requests_merge_in_order_with_their_own_options() -> None:
    model = FakeModel(delay=0.02)
    batcher = Batcher(model, max_batch_size=64, max_wait_ms=20)

    async def main() -> list[list[Any]]:
        calls = [batcher.call([i, i + 100], f"opt{i}", timeout_s=5) for i in range(20)]
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    batcher.close()
    assert results == [[(2 * i, f"opt{i}"), (2 * (i + 100), f"opt{i}")] for i in range(20)]
    assert batcher.stats.max_rows > 2 and batcher.stats.multi_job_batches >= 1
    assert batcher.stats.rows == 40 and batcher.stats.jobs == 20
    assert all(len(batch) <= 64 for batch in model.batches)


def test_a_lone_request_does_not_wait_for_batch_mates() -> None:
    batcher = Batcher(FakeModel(), max_batch_size=64, max_wait_ms=500)

    async def main() -> float:
        started = time.perf_counter()
        await batcher.call([1], None, timeout_s=5)
        return time.perf_counter() - started

    assert asyncio.run(main()) < 0.25
    batcher.close()


def test_batches_never_exceed_max_batch_size() -> None:
    model = FakeModel(delay=0.01)
    batcher = Batcher(model, max_batch_size=5, max_wait_ms=50)

    async def main() -> None:
        await asyncio.gather(*(batcher.call([i, i, i], None, timeout_s=5) for i in range(10)))

    asyncio.run(main())
    batcher.close()
    assert max(len(batch) for batch in model.batches) <= 5


def test_one_bad_request_fails_alone() -> None:
    model = FakeModel(delay=0.01)
    batcher = Batcher(model, max_batch_size=64, max_wait_ms=50)

    async def main() -> list[Any]:
        calls = [batcher.call(["bad"] if i == 3 else [i], None, timeout_s=5) for i in range(8)]
        return await asyncio.gather(*calls, return_exceptions=True)

    model.gate.clear()  # hold the worker so the requests queue up and merge
    threading.Timer(0.05, model.gate.set).start()
    results = asyncio.run(main())
    batcher.close()
    assert isinstance(results[3], errors.ValidationFailed)
    assert [r for i, r in enumerate(results) if i != 3] == [[(2 * i, None)] for i in range(8) if i != 3]
    assert any("bad" in batch and len(batch) > 1 for batch in model.batches)  # it was merged, then split


def test_a_full_queue_answers_503_with_retry_after() -> None:
    model = FakeModel()
    model.gate.clear()
    batcher = Batcher(model, max_batch_size=1, max_wait_ms=0, max_queue=2)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.call([1], None, timeout_s=5))
        await asyncio.sleep(0.05)  # the worker holds it
        queued = [asyncio.ensure_future(batcher.call([i], None, timeout_s=5)) for i in (2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(errors.ServiceUnavailable) as full:
            await batcher.call([4], None, timeout_s=5)
        assert full.value.headers["Retry-After"] == "1" and full.value.code == "queue_full"
        model.gate.set()
        assert await asyncio.gather(first, *queued) == [[(2, None)], [(4, None)], [(6, None)]]

    asyncio.run(main())
    batcher.close()
    assert batcher.stats.rejected == 1


def test_past_its_deadline_a_request_answers_504_and_is_never_run() -> None:
    model = FakeModel()
    model.gate.clear()
    batcher = Batcher(model, max_batch_size=1, max_wait_ms=0)

    async def main() -> None:
        blocker = asyncio.ensure_future(batcher.call(["first"], None, timeout_s=5))
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        with pytest.raises(errors.DeadlineExceeded):
            await batcher.call(["late"], None, timeout_s=0.1)
        assert time.perf_counter() - started < 1
        model.gate.set()
        await blocker

    asyncio.run(main())
    batcher.close()
    assert ["late"] not in model.batches and batcher.stats.expired == 1


def test_a_gone_client_is_dropped_before_its_work_runs() -> None:
    model = FakeModel()
    model.gate.clear()
    batcher = Batcher(model, max_batch_size=1, max_wait_ms=0)
    gone = threading.Event()

    async def main() -> None:
        blocker = asyncio.ensure_future(batcher.call(["first"], None, timeout_s=5))
        await asyncio.sleep(0.02)
        dropped = asyncio.ensure_future(batcher.call(["dropped"], None, timeout_s=5, gone=gone.is_set))
        await asyncio.sleep(0.02)
        gone.set()
        model.gate.set()
        await blocker
        with pytest.raises(ClientGone):
            await dropped

    asyncio.run(main())
    batcher.close()
    assert ["dropped"] not in model.batches and batcher.stats.cancelled == 1


def test_replicas_share_the_queue_and_close_drains_it() -> None:
    model = FakeModel(delay=0.02)
    batcher = Batcher(model, replicas=3, max_batch_size=1, max_wait_ms=0)

    async def main() -> list[Any]:
        calls = [asyncio.ensure_future(batcher.call([i], None, timeout_s=5)) for i in range(12)]
        await asyncio.sleep(0.01)
        closing = asyncio.get_running_loop().run_in_executor(None, batcher.close)
        await asyncio.sleep(0.01)
        with pytest.raises(ReplicaClosed):
            await batcher.call([99], None, timeout_s=5)
        results = await asyncio.gather(*calls)
        await closing
        return results

    assert asyncio.run(main()) == [[(2 * i, None)] for i in range(12)]
    assert model.replicas == {0, 1, 2}


# Requests of more rows than a batch holds (issue 15, item 9): one queue entry, run in slices of at
# most max_batch_size rows, answered together in order, errors naming the request's own rows.


class RowModel(FakeModel):
    """Like FakeModel, but a "bad" row fails with an error naming its row in the batch."""

    def __call__(self, replica: int, rows: list[Any], options: list[Any]) -> Sequence[Any]:
        if "bad" in rows:
            self.batches.append(list(rows))
            raise InvalidRow(rows.index("bad"), "is bad", "x")
        return super().__call__(replica, rows, options)


def test_a_request_larger_than_a_batch_runs_in_slices_and_answers_in_order() -> None:
    model = FakeModel(delay=0.005)
    batcher = Batcher(model, replicas=2, max_batch_size=5, max_wait_ms=0)

    async def main() -> list[Any]:
        return await batcher.call(list(range(23)), "o", timeout_s=5)

    assert asyncio.run(main()) == [(2 * i, "o") for i in range(23)]
    batcher.close()
    assert sorted(len(batch) for batch in model.batches) == [3, 5, 5, 5, 5]
    assert batcher.stats.rows == 23 and batcher.stats.max_rows == 5


def test_a_failing_slice_fails_its_request_naming_the_requests_own_row() -> None:
    model = RowModel()
    batcher = Batcher(model, max_batch_size=4, max_wait_ms=0)
    rows: list[Any] = [*range(13), "bad", *range(6)]

    async def main() -> None:
        with pytest.raises(InvalidRow) as failed:
            await batcher.call(rows, None, timeout_s=5)
        assert failed.value.param == "inputs.13.x" and failed.value.message == "inputs.13.x: is bad"
        assert await batcher.call([1, 2], None, timeout_s=5) == [(2, None), (4, None)]

    asyncio.run(main())
    batcher.close()
    assert not any(16 in batch for batch in model.batches)  # the slices after it were dropped


def test_smaller_requests_take_turns_with_a_large_one() -> None:
    model = FakeModel(delay=0.01)
    model.gate.clear()
    batcher = Batcher(model, max_batch_size=4, max_wait_ms=0)
    finished: list[str] = []

    async def timed(name: str, rows: list[Any]) -> None:
        await batcher.call(rows, None, timeout_s=5)
        finished.append(name)

    async def main() -> None:
        large = asyncio.ensure_future(timed("large", list(range(40))))
        await asyncio.sleep(0.02)
        small = asyncio.ensure_future(timed("small", ["s"]))
        await asyncio.sleep(0.02)
        model.gate.set()
        await asyncio.gather(large, small)

    asyncio.run(main())
    batcher.close()
    assert finished == ["small", "large"]
    # It ran after at most two slices of the large request (merged with a third one, maybe).
    assert next(i for i, batch in enumerate(model.batches) if "s" in batch) <= 2


def test_a_large_request_takes_one_place_in_the_queue_and_keeps_its_deadline() -> None:
    model = FakeModel()
    model.gate.clear()
    batcher = Batcher(model, max_batch_size=2, max_wait_ms=0, max_queue=1)

    async def main() -> None:
        blocker = asyncio.ensure_future(batcher.call(["first"], None, timeout_s=5))
        await asyncio.sleep(0.02)
        large = asyncio.ensure_future(batcher.call(list(range(10)), None, timeout_s=0.2))
        await asyncio.sleep(0)
        with pytest.raises(errors.ServiceUnavailable):
            await batcher.call([1], None, timeout_s=5)
        with pytest.raises(errors.DeadlineExceeded):
            await large
        model.gate.set()
        await blocker

    asyncio.run(main())
    batcher.close()
    assert model.batches == [["first"]] and batcher.stats.rejected == 1


def test_without_splitting_each_request_runs_whole() -> None:
    model = FakeModel()
    batcher = Batcher(model, max_batch_size=1, max_wait_ms=0, split=False)

    async def main() -> list[Any]:
        return await batcher.call([1, 2, 3], None, timeout_s=5)

    assert asyncio.run(main()) == [(2, None), (4, None), (6, None)]
    batcher.close()
    assert model.batches == [[1, 2, 3]]
