"""Multi-adapter serving: 16 concurrent requests spread over 8 LoRA adapters of one base, against the
same load on the base alone, in the same run (engine level; prints a table; not a test).

The base is a random-weight model of Qwen2.5-0.5B's shape (benchmarks/llm_engine.py builds it once
into --model-dir); the adapters are random rank-8 LoRAs on every attention and MLP projection (what
our fine-tuning jobs train by default), in peft's layout. Each request has --prompt-len random prompt
tokens and --new-tokens greedy new tokens (eos ignored). The two loads run in turns, --rounds times
each (prefix caching off, so every round computes its prompts), after a warm-up that loads every
adapter once (a first use reads the adapter from disk; its time is reported apart); the figures are
the medians. Target: adapters at ≥ 80% of the base's output
tokens/s.

    python -m benchmarks.multi_lora --rounds 3 --threads 2

The machine is shared: quote `uptime` with the figures and read them as ±15%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from benchmarks.llm_engine import build_model
from openmaas.engine import EngineConfig, LLMEngine, SamplingParams
from openmaas.engine.lora import LoraRequest
from openmaas.engine.testing import build_tiny_adapter


def run_load(engine: LLMEngine, prompts: list[list[int]], loras: list[LoraRequest | None], new: int) -> float:
    """Output tokens/s of the prompts served together, prefill included."""
    params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
    start = time.perf_counter()
    results = engine.generate(prompts, params, loras)
    wall = time.perf_counter() - start
    return sum(len(r[0].token_ids) for r in results) / wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument(
        "--preset", choices=["qwen0.5b", "small"], default="qwen0.5b",
        help="small: hidden 512, 8 layers, vocab 32000 (a quick run on a busy machine)",
    )  # fmt: skip
    parser.add_argument("--adapter-dir", type=Path, default=Path("/tmp/openmaas-bench/lora-adapters"))
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model_dir = _model(args)
    adapters = []
    for i in range(args.adapters):
        folder = args.adapter_dir / f"{args.preset}-r{args.rank}-{i}"
        if not (folder / "adapter_config.json").exists():
            build_tiny_adapter(folder, model_dir, rank=args.rank, alpha=2.0 * args.rank, std=0.02, seed=i)
        adapters.append(LoraRequest(f"adapter-{i}", folder))
    config = EngineConfig(
        model=str(model_dir), dtype=args.dtype, max_num_seqs=args.requests, max_loras=args.adapters,
        kv_cache_memory_bytes=256 << 20, enable_prefix_caching=False,
        max_model_len=args.prompt_len + args.new_tokens + 16,
    )  # fmt: skip
    engine = LLMEngine(config)
    g = torch.Generator().manual_seed(0)
    vocab = engine.model_config.vocab_size
    prompts = [
        torch.randint(3, vocab, (args.prompt_len,), generator=g).tolist() for _ in range(args.requests)
    ]
    spread: list[LoraRequest | None] = [adapters[i % len(adapters)] for i in range(args.requests)]
    base: list[LoraRequest | None] = [None] * args.requests

    run_load(engine, prompts[:2], [None, None], 4)  # warm-up: kernels, oneDNN
    start = time.perf_counter()
    run_load(engine, [p[:8] for p in prompts[: len(adapters)]], list(adapters), 1)
    first_use = time.perf_counter() - start
    base_tps, lora_tps = [], []
    for _ in range(args.rounds):
        base_tps.append(run_load(engine, prompts, base, args.new_tokens))
        lora_tps.append(run_load(engine, prompts, spread, args.new_tokens))
    b, a = statistics.median(base_tps), statistics.median(lora_tps)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"engine {engine.runner.dtype}, {args.threads} threads, {os.cpu_count()} CPUs; uptime: {load}")
    shape = f"{args.prompt_len} prompt + {args.new_tokens} new tokens"
    print(f"{args.requests} requests x ({shape}), rounds {args.rounds}")
    print(f"first use of {len(adapters)} rank-{args.rank} adapters (read + load + 1 step): {first_use:.2f} s")
    print(f"{'load':<24}{'output tok/s (median)':>24}  all rounds")
    print(f"{'base alone':<24}{b:>24.1f}  {_fmt(base_tps)}")
    print(f"{f'{len(adapters)} adapters, spread':<24}{a:>24.1f}  {_fmt(lora_tps)}")
    print(f"adapters / base: {a / b:.1%} (target >= 80%)")


def _model(args: argparse.Namespace) -> Path:
    if args.preset == "qwen0.5b":
        return build_model(args.model_dir or Path("/tmp/openmaas-bench/qwen2.5-0.5b-random"))
    folder = args.model_dir or Path("/tmp/openmaas-bench/qwen2-small-random")
    if not (folder / "config.json").exists():
        from openmaas.engine.testing import build_tiny_model

        build_tiny_model(
            folder, "qwen2", hidden_size=512, intermediate_size=2048, num_layers=8, num_heads=8,
            num_kv_heads=2, vocab_size=32000, max_position_embeddings=4096, initializer_range=0.02,
            tie_word_embeddings=True, with_tokenizer=False,
        )  # fmt: skip
    return folder


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
