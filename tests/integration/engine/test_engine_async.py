"""The asyncio front: many concurrent streams, disconnects that free blocks, a bounded queue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from openmaas.engine import AsyncLLMEngine, RequestOutput, SamplingParams
from openmaas.errors import ServiceUnavailable

from .conftest import make_engine, random_prompts


async def _wait_until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def _all_blocks_free(front: AsyncLLMEngine) -> bool:
    stats = front.stats()
    return stats.num_free_blocks == stats.num_blocks and front.num_active == 0


def test_32_concurrent_streams_all_complete_with_sync_output(model_dirs: dict[str, Path]) -> None:
    prompts = random_prompts([3 + (i * 7) % 50 for i in range(32)], seed=31)
    params = SamplingParams(max_tokens=12, temperature=0.0)
    expected = [r[0].token_ids for r in make_engine(model_dirs["llama"]).generate(prompts, params)]
    front = AsyncLLMEngine(make_engine(model_dirs["llama"], max_num_seqs=16))

    async def consume(i: int) -> tuple[list[int], str, RequestOutput]:
        tokens, text, last = [], "", None
        async for out in front.generate(prompts[i], params, request_id=f"r{i}"):
            tokens += out.new_token_ids
            text += out.text_delta
            last = out
        assert last is not None
        return tokens, text, last

    async def main() -> list[tuple[list[int], str, RequestOutput]]:
        return await asyncio.gather(*(consume(i) for i in range(32)))

    try:
        results = asyncio.run(main())
    finally:
        front.shutdown()
    for (tokens, text, last), want in zip(results, expected, strict=True):
        assert tokens == want
        assert last.finished and text == last.text
        assert last.completion_tokens == len(want)
    assert _all_blocks_free(front)


@pytest.mark.parametrize("how", ["cancel", "break", "aclose"])
def test_consumer_that_stops_mid_stream_frees_its_blocks(model_dirs: dict[str, Path], how: str) -> None:
    front = AsyncLLMEngine(make_engine(model_dirs["llama"]))
    params = SamplingParams(max_tokens=900, temperature=0.0, ignore_eos=True)

    async def main() -> None:
        got = asyncio.Event()
        stream = front.generate(random_prompts([20], seed=1)[0], params, request_id="leaver")

        async def reader() -> None:
            async for out in stream:
                if out.completion_tokens >= 3:
                    got.set()
                    if how == "break":
                        break
                    if how == "aclose":
                        await stream.aclose()

        task = asyncio.create_task(reader())
        await got.wait()
        assert front.stats().num_free_blocks < front.stats().num_blocks
        if how == "cancel":
            task.cancel()  # what the HTTP server does when the client disconnects
        await asyncio.gather(task, return_exceptions=True)
        if how == "break":
            del stream, task  # the dropped stream aborts itself
        await _wait_until(lambda: _all_blocks_free(front))
        assert not front.engine.has_unfinished_requests

    try:
        asyncio.run(main())
    finally:
        front.shutdown()


def test_full_waiting_queue_answers_service_unavailable(model_dirs: dict[str, Path]) -> None:
    front = AsyncLLMEngine(make_engine(model_dirs["llama"]), max_waiting_requests=2, start=False)
    params = SamplingParams(max_tokens=4, temperature=0.0)

    async def main() -> list[int]:
        a = front.generate([5, 6, 7], params)
        b = front.generate([8, 9], params)
        with pytest.raises(ServiceUnavailable) as err:
            front.generate([10, 11], params)
        assert err.value.retry_after >= 1 and err.value.headers["Retry-After"] == "1"
        assert err.value.status == 503
        front.start()
        counts = []
        for stream in (a, b):
            counts.append(sum([len(o.new_token_ids) async for o in stream]))
        # Once the queue drains, new requests are admitted again.
        counts.append(sum([len(o.new_token_ids) async for o in front.generate([10, 11], params)]))
        return counts

    try:
        assert asyncio.run(main()) == [4, 4, 4]
    finally:
        front.shutdown()


def test_n_choices_stream_interleaved_until_all_finish(model_dirs: dict[str, Path]) -> None:
    front = AsyncLLMEngine(make_engine(model_dirs["qwen2"]))
    params = SamplingParams(max_tokens=5, temperature=1.0, n=3, seed=7, ignore_eos=True)

    async def main() -> dict[int, list[int]]:
        by_index: dict[int, list[int]] = {}
        async for out in front.generate([4, 5, 6, 7], params):
            by_index.setdefault(out.index, []).extend(out.new_token_ids)
        return by_index

    try:
        by_index = asyncio.run(main())
    finally:
        front.shutdown()
    assert sorted(by_index) == [0, 1, 2]
    assert all(len(tokens) == 5 for tokens in by_index.values())
