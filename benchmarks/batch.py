"""A 1,000-line batch against the same requests sent live (prints a table; not a test).

One in-process server with a tiny random Llama deployed (engine `max_num_seqs` 16). The same
chat requests (short prompts, `max_tokens` 8, greedy) are sent twice: live, through the `openai`
SDK at the engine's best concurrency (its `max_num_seqs`), and as one batch (`/v1/batches`),
which the server runs at half that concurrency so live traffic keeps room. Reported: wall time,
requests/s and output tokens/s of each, the batch's from its creation to `completed` (its
validation, output file and polling included).

    python -m benchmarks.batch --lines 1000 --max-tokens 8

The machine is shared: quote `uptime` with the figures and read them as ±15%.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
from tests.support.platforms import make_platform
from tests.support.served import Served
from tests.support.server import running_server

from openmaas import Client
from openmaas.api.app import create_app
from openmaas.engine.testing import build_tiny_model
from openmaas.serving.batches.runner import RunnerTimes

ENGINE = {"kv_cache_memory_bytes": 32 * 1024 * 1024, "max_num_seqs": 16, "max_model_len": 256}
CHAT = "/v1/chat/completions"


def _body(i: int, max_tokens: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"Question number {i}: what comes next?"}]
    return {"model": "chat", "messages": messages, "max_tokens": max_tokens, "temperature": 0}


def _deploy(url: str, key: str, folder: Path) -> None:
    with Client(url, key) as client:
        client.import_model(folder, "chat")
        client.deployments.create(model="chat", name="chat", engine=ENGINE)
        deadline = time.monotonic() + 300
        while client.deployments.get("chat").state != "ready":
            assert time.monotonic() < deadline, "the deployment did not become ready"
            time.sleep(0.2)


async def _live(url: str, key: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[float, int]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=5)
    queue = iter(bodies)
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        for body in queue:
            reply = await client.chat.completions.create(**body)
            assert reply.usage is not None
            tokens += reply.usage.completion_tokens

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    return elapsed, tokens


def _batch(url: str, key: str, bodies: list[dict[str, Any]]) -> tuple[float, int, dict[str, int]]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=2)
    content = b"".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": body}).encode() + b"\n"
        for i, body in enumerate(bodies)
    )
    file_id = client.files.create(file=("requests.jsonl", io.BytesIO(content)), purpose="batch").id
    start = time.perf_counter()
    batch = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
    elapsed = time.perf_counter() - start
    assert batch.status == "completed" and batch.output_file_id, batch
    lines = client.files.content(batch.output_file_id).content.splitlines()
    tokens = sum(json.loads(line)["response"]["body"]["usage"]["completion_tokens"] for line in lines)
    counts = batch.request_counts
    return elapsed, tokens, {"completed": counts.completed, "failed": counts.failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()
    bodies = [_body(i, args.max_tokens) for i in range(args.lines)]
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        home = Path(tmp)
        platform = make_platform(home / "home", f"sqlite:///{home / 'openmaas.db'}")
        platform.batches.times = RunnerTimes(poll_s=1.0, lease_s=60.0, flush_s=0.2)
        admin_key = platform.new_admin_key
        assert admin_key is not None
        folder = build_tiny_model(
            home / "tiny", "llama", hidden_size=128, num_layers=4, max_position_embeddings=256
        )
        try:
            with running_server(create_app(platform)) as url:
                key = Served(url, platform, admin_key).tenant("bench").key
                _deploy(url, key, folder)
                asyncio.run(_live(url, key, bodies[:32], ENGINE["max_num_seqs"]))  # warm up
                live_s, live_tokens = asyncio.run(_live(url, key, bodies, ENGINE["max_num_seqs"]))
                batch_s, batch_tokens, counts = _batch(url, key, bodies)
        finally:
            platform.close()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{args.lines} chat requests, max_tokens {args.max_tokens}, greedy; cpus {os.cpu_count()}; {load}")
    print(f"{'mode':<34}{'wall s':>8}{'req/s':>9}{'out tok/s':>11}")
    live_label = f"live, {ENGINE['max_num_seqs']} concurrent"
    print(f"{live_label:<34}{live_s:>8.1f}{args.lines / live_s:>9.1f}{live_tokens / live_s:>11.1f}")
    batch_label = f"batch, {ENGINE['max_num_seqs'] // 2} in flight {counts}"
    print(f"{batch_label:<34}{batch_s:>8.1f}{args.lines / batch_s:>9.1f}{batch_tokens / batch_s:>11.1f}")
    print(f"batch / live throughput: {live_s / batch_s:.2f}")


if __name__ == "__main__":
    main()
