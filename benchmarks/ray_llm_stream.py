"""What a Ray-actor LLM replica (`placement: ray`, serving/ray_llm.py) costs a stream per token:
one tiny random-weight Llama, the same engine settings, one greedy stream of `--tokens` tokens at
a time (eos ignored), read token by token as the SSE writer reads it — (a) in-process from the
engine's `RequestStream`, (b) through `RayLLMRuntime` from a Ray actor on a local one-node Ray
instance, both in the same run. Reports tokens/s (median of `--repeats`), the per-token overhead
(1/(b) - 1/(a)), and the 1-min load average (2 shared cores: quote it with the figures).

    .venv/bin/python -m benchmarks.ray_llm_stream [--tokens 400] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.testing import build_tiny_model
from openmaas.serving.deployment_config import EngineSettings, RuntimeConfig

ENGINE = EngineSettings(kv_cache_memory_bytes=8 * 1024 * 1024, max_model_len=1024, num_threads=1)


async def _stream(runtime: Any, tokens: int, request_id: str) -> float:
    """One stream read to its end: its tokens/s."""
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    started = time.perf_counter()
    count = 0
    async with await runtime.open([1, 5, 9, 13], params, request_id) as stream:
        async for out in stream:
            count += len(out.new_token_ids)
    assert count == tokens, count
    return count / (time.perf_counter() - started)


async def _run(folder: Path, tokens: int, repeats: int) -> tuple[float, float]:
    """Medians of (a) and (b), their streams interleaved so that the shared machine's load drifts
    over both alike."""
    import ray

    from openmaas.serving.ray_llm import RayLLMRuntime
    from openmaas.serving.ray_pool import replica_spec
    from openmaas.serving.runtimes.llm import LLMRuntime

    config = RuntimeConfig(model_version="tiny:1", engine=ENGINE)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    spec = replica_spec("text-generation", str(folder.parent), folder.name, config, 1.0, 0.0, 0)
    remote = await asyncio.to_thread(RayLLMRuntime, spec, 1)
    local = LLMRuntime(folder, config)
    try:
        rates: dict[str, list[float]] = {"local": [], "ray": []}
        for i in range(repeats + 1):  # the first round warms both up
            for tag, runtime in (("local", local), ("ray", remote)):
                rate = await _stream(runtime, tokens, f"{tag}-{i}")
                if i:
                    rates[tag].append(rate)
        return statistics.median(rates["local"]), statistics.median(rates["ray"])
    finally:
        local.close()
        remote.close()
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_model(Path(tmp) / "tiny", max_position_embeddings=1024)
        in_process, on_ray = asyncio.run(_run(folder, args.tokens, args.repeats))
    overhead_us = (1 / on_ray - 1 / in_process) * 1e6
    print(f"one greedy stream of {args.tokens} tokens, median of {args.repeats}:")
    print(f"  (a) in-process engine      {in_process:8.0f} tokens/s")
    print(f"  (b) Ray actor replica      {on_ray:8.0f} tokens/s  ({on_ray / in_process:.0%} of (a))")
    print(f"  per-token overhead of (b): {overhead_us:.0f} µs")
    print(f"1-min load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end (2 cores, shared)")


if __name__ == "__main__":
    main()
