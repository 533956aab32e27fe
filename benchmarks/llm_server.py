"""End to end through the OpenAI API: our server (`openmaas serve`) against llama.cpp's `llama-server
--parallel 16`, on the same GGUF file, 16 concurrent clients (not a test; prints a table).

The model is the Qwen2.5-0.5B-shaped random model of benchmarks/llm_engine.py, with one change so that
both servers stream the same thing: a random model's greedy tokens are mostly ids the converter pads
the vocabulary with (no text), and our server sends a stream chunk only for a token with text (an empty
delta is skipped), so time to first token would measure something else on each side. Its tied
embedding rows are zeroed for every id but the printable-ASCII tokens of the byte-level BPE the GGUF
carries: those ids then score 0 and greedy decoding picks a text token. Every matrix keeps its shape, so
a step costs what it costs on the random model. The file is converted and quantised once (Q8_0 / Q4_0
with `llama-quantize --pure`, or BF16) into --gguf-dir.

Ours imports that very file through the public API (`Client.import_model`, GGUF import: served as it
is, Q8_0/Q4_0 by our int8/int4 kernels) and serves it as a deployment with `num_threads` = --threads;
llama-server runs it with `-t/-tb` --threads, `--parallel 16` and a context of 16 slots of prompt +
new tokens (`--no-repack` for Q8_0/Q4_0: repacking crashes on this AVX-512 machine). Both servers run
at once (an idle one costs nothing) and are measured in turns (who goes first alternates by round),
--rounds times: per round 16 clients each send one /v1/completions request (--prompt-len prompt token
ids, --new-tokens new tokens, greedy, `"ignore_eos": true` on both, which both servers accept),
non-streaming then streaming. Before the first round each server answers a warm-up round of 16
requests (not counted).

Prompts: both servers keep a prompt cache (ours: prefix caching in the KV block manager; llama-server:
`cache_prompt`, on by default, reuses a slot's previous prompt), so a prompt sent twice is mostly not
prefilled the second time. By default every round and mode draws 16 fresh prompts (the same ones, in
the same order, for both servers, and never seen before by either): time to first token then includes
the whole prefill. `--reuse-prompts` instead sends one fixed set of 16 prompts, once before the first
round (not counted) and then in every round: it measures both servers' prefix caching.

Output tokens/s is all requests' tokens over the round's wall time (median over rounds). Time to first
token (TTFT) is from sending a streamed request to its first chunk with a token, and TPOT the time per
output token after it ((last chunk - first chunk) / (tokens - 1)): p50 and p90 over every streamed
request of every round. The load average is printed with each round and at the end.

    python -m benchmarks.llm_server --precisions int8,int4 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from benchmarks import llamacpp
from benchmarks.llm_engine import build_model
from benchmarks.servers import PYTHON, free_port, server_process

PRECISIONS = {"int8": "Q8_0", "int4": "Q4_0", "bfloat16": "BF16"}


@dataclass
class Round:
    tokens: int
    wall_s: float
    ttft: list[float] = field(default_factory=list)  # streaming only: seconds to the first token
    tpot: list[float] = field(default_factory=list)  # streaming only: seconds per token after it

    @property
    def tps(self) -> float:
        return self.tokens / self.wall_s


def build_text_model(random_dir: Path, folder: Path) -> tuple[Path, list[int]]:
    """The random model with its embedding zeroed outside printable-ASCII tokens (module docstring),
    its tokenizer beside it; returns the folder and the kept ids."""
    from safetensors.torch import load_file, save_file
    from transformers import PreTrainedTokenizerFast

    if not (folder / "tokenizer.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        llamacpp._tokenizer_folder(folder)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    kept = [
        i
        for i in range(len(tokenizer))
        if (text := tokenizer.decode([i]))
        and text.isprintable()
        and text.isascii()
        and i not in tokenizer.all_special_ids
    ]
    if not (folder / "config.json").exists():
        weights = load_file(str(random_dir / "model.safetensors"))
        embed = weights["model.embed_tokens.weight"]
        mask = torch.zeros(embed.shape[0], dtype=torch.bool)
        mask[kept] = True
        embed[~mask] = 0
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text((random_dir / "config.json").read_text())
    return folder, kept


@dataclass
class Reply:
    tokens: int
    first_s: float | None = None  # streaming: from sending to the first chunk with a token
    last_s: float | None = None  # streaming: to the last chunk with a token


async def one_request(
    http: httpx.AsyncClient, url: str, body: dict, stream: bool, headers: dict[str, str]
) -> Reply:
    start = time.perf_counter()
    if not stream:
        reply = await http.post(url, json=body, headers=headers)
        reply.raise_for_status()
        return Reply(int(reply.json()["usage"]["completion_tokens"]))
    first = last = None
    tokens = 0
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with http.stream("POST", url, json=payload, headers=headers) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if any(c.get("text") for c in event.get("choices") or ()):
                last = time.perf_counter() - start
                first = last if first is None else first
            if event.get("usage"):
                tokens = int(event["usage"]["completion_tokens"])
    return Reply(tokens, first, last)


async def run_round(
    base: str, model: str, key: str | None, prompts: list[list[int]], new: int, stream: bool
) -> Round:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=len(prompts))
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        bodies = [
            {"model": model, "prompt": p, "max_tokens": new, "temperature": 0, "ignore_eos": True}
            for p in prompts
        ]
        start = time.perf_counter()
        results = await asyncio.gather(
            *(one_request(http, f"{base}/v1/completions", b, stream, headers) for b in bodies)
        )
        wall = time.perf_counter() - start
    tokens = sum(r.tokens for r in results)
    if tokens != new * len(prompts):
        raise RuntimeError(f"{base}: {tokens} tokens instead of {new * len(prompts)} (stream={stream})")
    done = Round(tokens, wall)
    for r in results:
        if r.first_s is not None and r.last_s is not None:
            done.ttft.append(r.first_s)
            done.tpot.append((r.last_s - r.first_s) / max(r.tokens - 1, 1))
    return done


def deploy_ours(url: str, admin_key: str, gguf: Path, name: str, args: argparse.Namespace) -> str:
    """An organisation, its key, the GGUF imported and deployed; returns the key."""
    from openmaas import Client

    with Client(url, admin_key) as admin:
        admin.admin.organizations.create("bench")
        key = admin.admin.api_keys("bench").create("bench").key
    with Client(url, key) as client:
        client.import_model(gguf, name)
    engine = {
        "num_threads": args.threads,
        "max_num_seqs": args.clients,
        "max_model_len": args.prompt_len + args.new_tokens + 16,
        "kv_cache_memory_bytes": 1 << 30,
    }
    if args.max_batched_tokens:
        engine["max_num_batched_tokens"] = args.max_batched_tokens
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        created = http.post("/v1/deployments", json={"model": name, "name": name, "engine": engine})
        if created.status_code != 201:
            raise RuntimeError(f"deployment refused: {created.text}")
        deadline = time.monotonic() + 600
        while (state := http.get(f"/v1/deployments/{name}").json()["state"]) != "ready":
            if state not in ("pending", "loading") or time.monotonic() > deadline:
                raise RuntimeError(f"deployment {state}: {http.get(f'/v1/deployments/{name}/events').text}")
            time.sleep(0.5)
    return key


def wait_healthy(url: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"llama-server at {url} not healthy after {timeout} s")


def find_server() -> Path | None:
    for path in sorted((llamacpp.BENCH / "llamacpp-build").rglob("llama-server")):
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def prompt_sets(kept: list[int], args: argparse.Namespace) -> Iterator[list[list[int]]]:
    """Sets of --clients prompts of printable-ASCII token ids: a fresh set each time, or (with
    --reuse-prompts) one set over and over."""
    g = torch.Generator().manual_seed(0)
    pick = torch.tensor(kept)

    def draw() -> list[list[int]]:
        return [
            pick[torch.randint(0, len(kept), (args.prompt_len,), generator=g)].tolist()
            for _ in range(args.clients)
        ]

    fixed = draw() if args.reuse_prompts else None
    while True:
        yield fixed if fixed is not None else draw()


def measure(precision: str, gguf: Path, kept: list[int], args: argparse.Namespace) -> dict[str, list[Round]]:
    from openmaas.tenancy.keys import generate_key

    binary = find_server()
    if binary is None:
        raise FileNotFoundError("llama-server not built; run benchmarks/llamacpp_setup.sh")
    prompts = prompt_sets(kept, args)
    admin_key = generate_key()
    ours_port, theirs_port = free_port(), free_port()
    ctx = args.clients * (args.prompt_len + args.new_tokens + 16)
    llama_cmd = [str(binary), "-m", str(gguf), "--port", str(theirs_port), "--parallel", str(args.clients)]
    llama_cmd += ["-c", str(ctx), "-t", str(args.threads), "-tb", str(args.threads), "--no-webui"]
    if precision != "bfloat16":
        llama_cmd.append("--no-repack")
    rounds: dict[str, list[Round]] = {}
    model = f"bench-{precision}"
    with tempfile.TemporaryDirectory() as home:
        env = {"OPENMAAS_HOME": str(Path(home) / "om"), "OPENMAAS_ADMIN_KEY": admin_key}
        ours_cmd = [PYTHON, "-m", "openmaas.cli.main", "serve", "--port", str(ours_port)]
        with (
            server_process(ours_cmd, ours_port, cpu=None, env=env, wait_s=120),
            server_process(llama_cmd, theirs_port, cpu=None, wait_s=600),
        ):
            ours_url, theirs_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{theirs_port}"
            key = deploy_ours(ours_url, admin_key, gguf, model, args)
            wait_healthy(theirs_url)
            sides = [("ours", ours_url, key), ("llama-server", theirs_url, None)]
            warm = next(prompts)  # not counted; with --reuse-prompts, it primes both prompt caches
            for _, url, k in sides:
                asyncio.run(run_round(url, model, k, warm, 4 if not args.reuse_prompts else 1, False))
            for i in range(args.rounds):
                for stream in (False, True):
                    batch = next(prompts)
                    for side, url, k in sides if i % 2 == 0 else sides[::-1]:
                        r = asyncio.run(run_round(url, model, k, batch, args.new_tokens, stream))
                        mode = "stream" if stream else "whole"
                        rounds.setdefault(f"{side} {mode}", []).append(r)
                        timing = (
                            f", TTFT p50 {percentile(r.ttft, 50):.2f} s p90 {percentile(r.ttft, 90):.2f} s"
                            if r.ttft
                            else ""
                        )
                        print(
                            f"  {precision} round {i} {side:<12} {mode:<6} {r.tps:7.1f} tokens/s{timing} "
                            f"(load {os.getloadavg()[0]:.1f})",
                            flush=True,
                        )
    return dict(sorted(rounds.items(), key=lambda kv: (kv[0].split()[1] != "whole", kv[0])))


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1-99), interpolated between the two nearest ranks."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/openmaas-bench/qwen2.5-0.5b-random"))
    parser.add_argument("--text-model-dir", type=Path, default=Path("/tmp/openmaas-bench/qwen2.5-0.5b-text"))
    parser.add_argument("--gguf-dir", type=Path, default=Path("/tmp/openmaas-bench/gguf-text"))
    parser.add_argument("--precisions", default="int8,int4")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--reuse-prompts",
        action="store_true",
        help="send one set of prompts in every round (primed before the first): measures prefix caching",
    )
    parser.add_argument(
        "--max-batched-tokens",
        type=int,
        default=None,
        help="our engine's step token budget (default its own)",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()
    folder, kept = build_text_model(build_model(args.model_dir), args.text_model_dir)
    args.gguf_dir.mkdir(parents=True, exist_ok=True)
    table: dict[str, dict[str, list[Round]]] = {}
    for precision in args.precisions.split(","):
        if precision == "bfloat16":
            gguf = llamacpp.convert(folder, "bfloat16", args.gguf_dir)
        else:
            gguf = llamacpp.quantize(folder, precision, args.gguf_dir)
        table[precision] = measure(precision, gguf, kept, args)
    print()
    budget = args.max_batched_tokens or "engine default"
    prompts = "one prompt set reused (prefix caches warm)" if args.reuse_prompts else "fresh prompts"
    print(
        f"{args.clients} clients x ({args.prompt_len} prompt + {args.new_tokens} new tokens), "
        f"{prompts}; "
        f"output t/s: median of {args.rounds} rounds; TTFT and TPOT: p50/p90 over all streamed requests; "
        f"our step token budget: {budget}"
    )
    print(
        f"{'file':<6}{'server':<14}{'mode':<8}{'output t/s':>11}{'ours/theirs':>13}"
        f"{'TTFT p50 s':>12}{'TTFT p90 s':>12}{'TPOT p50 ms':>13}{'TPOT p90 ms':>13}"
    )
    for precision, rounds in table.items():
        for label, runs in rounds.items():
            side, mode = label.split(" ")
            tps = statistics.median(r.tps for r in runs)
            ratio = "-"
            if side == "ours":
                ratio = f"{tps / statistics.median(r.tps for r in rounds[f'llama-server {mode}']):.0%}"
            ttft = [t for r in runs for t in r.ttft]
            tpot = [t * 1000 for r in runs for t in r.tpot]
            latency = "".join(
                f"{percentile(values, q):>{width}.{digits}f}" if values else f"{'-':>{width}}"
                for values, width, digits in ((ttft, 12, 2), (tpot, 13, 0))
                for q in (50, 90)
            )
            print(f"{PRECISIONS[precision]:<6}{side:<14}{mode:<8}{tps:>11.1f}{ratio:>13}{latency}")
    print(
        f"load average (1/5/15 min) at start {' '.join(f'{x:.1f}' for x in load_before)}, "
        f"at end {' '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores, shared); threads {args.threads}"
    )


if __name__ == "__main__":
    main()
