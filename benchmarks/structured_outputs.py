"""Benchmark of structured outputs (grammar-constrained decoding) on the OpenMaaS engine (prints a table).

A small random-weight Llama (hidden 256, 4 layers) with a realistic vocabulary (a 32k byte-level BPE
trained here on synthetic text: mask cost grows with the vocabulary) is built once into --model-dir.
The same requests run with and without a JSON schema, interleaved in one run: batch-1 and
16-concurrent decode tokens/s (tokens per second of the median step once every request has its first
token, alternating with and without a schema round by round). Each
request produces exactly --max-tokens tokens either way: the unconstrained ones ignore end-of-sequence,
and the schema (an array of at least 500 order lines: keys, enums, bounded integers, short strings)
cannot be complete sooner, so both keep the same batch for the same number of steps. Sampling is at
temperature 1 (both through the same sampling path) and greedy (where unconstrained rows take the
plain fast path). Then time to first token: a schema never seen (compiled at admission), the same
schema again (cached), and no schema; and the one-off cost of the grammar engine's tokenizer.

    python -m benchmarks.structured_outputs --threads 1

The masks are computed in a background thread while the model runs: give the engine fewer threads
than cores (the default here, 1, on a 2-core machine) or the mask thread competes with PyTorch's. The
machine is shared: read the numbers as ±15% and quote `uptime` beside them (2 PyTorch threads on 2
busy cores measure OpenMP's barriers, not this).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from openmaas.engine import EngineConfig, LLMEngine, SamplingParams
from openmaas.engine.guided import GrammarSpec
from openmaas.engine.testing import build_tiny_model, build_tokenizer

VOCAB = 32000


def order_schema(tag: str = "Order") -> dict[str, Any]:
    line = {
        "type": "object",
        "properties": {
            "sku": {"enum": ["A-100", "B-200", "C-300", "D-400"]},
            "qty": {"type": "integer", "minimum": 1, "maximum": 999},
            "note": {"type": "string", "maxLength": 12},
            "gift": {"type": "boolean"},
        },
        "required": ["sku", "qty", "note", "gift"],
        "additionalProperties": False,
    }
    return {
        "title": tag,
        "type": "object",
        "properties": {
            "customer": {"type": "string", "maxLength": 16},
            "lines": {"type": "array", "items": line, "minItems": 500},
        },
        "required": ["customer", "lines"],
        "additionalProperties": False,
    }


def build_model(folder: Path) -> Path:
    """A random-weight Llama with a 32k BPE trained on synthetic words (once; reused after)."""
    if (folder / "tokenizer.json").exists():
        return folder
    build_tiny_model(
        folder,
        "llama",
        hidden_size=256,
        intermediate_size=704,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=2048,
        initializer_range=0.05,
    )
    rng = random.Random(0)
    consonants, vowels, endings = "bcdfghjklmnprstvwz", "aeiou", "nrst "
    syllables = [rng.choice(consonants) + rng.choice(vowels) + rng.choice(endings) for _ in range(400)]

    def word() -> str:
        return "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))).replace(" ", "")

    lines = [
        " ".join(word() for _ in range(20)) + f' {{"key": "{word()}", "n": {rng.randint(0, 99999)}}}'
        for _ in range(20000)
    ]
    build_tokenizer(folder, VOCAB, corpus=lines)  # replaces build_tiny_model's 500-token one
    return folder


def decode_rate(engine: LLMEngine, params: list[SamplingParams], prompt: list[int]) -> tuple[float, int]:
    """Decode tokens/s of these requests run together (from the median step once every request has
    its first token: robust to a busy neighbour's bursts), and how many tokens each produced."""
    for i, p in enumerate(params):
        engine.add_request(f"r{time.monotonic_ns()}-{i}", prompt, p)
    counts: dict[tuple[str, int], int] = {}
    rates: list[float] = []
    while engine.has_unfinished_requests:
        started = time.perf_counter()
        outputs = engine.step()
        elapsed = time.perf_counter() - started
        decoding = len(counts) == len(params)
        for out in outputs:
            counts[(out.request_id, out.index)] = out.completion_tokens
        if decoding and outputs:
            rates.append(len(outputs) / elapsed)
    return statistics.median(rates), min(counts.values())


def ttft(engine: LLMEngine, params: SamplingParams, prompt: list[int]) -> float:
    start = time.perf_counter()
    request_id = f"t{time.monotonic_ns()}"
    engine.check_prompt(prompt, params)  # where the API compiles a new schema: before admission
    engine.add_request(request_id, prompt, params)
    while not engine.step():
        pass
    elapsed = time.perf_counter() - start
    engine.abort(request_id)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/openmaas-bench-structured"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per row (median kept)")
    args = parser.parse_args()

    folder = build_model(args.model_dir)
    engine = LLMEngine(
        EngineConfig(model=str(folder), num_threads=args.threads, max_model_len=2048, max_num_seqs=16)
    )
    assert engine.grammars is not None
    prompt = engine.tokenizer.encode_chat([{"role": "user", "content": "Write the order as JSON."}])  # type: ignore[union-attr]
    started = time.perf_counter()
    engine.grammars.compile(GrammarSpec("json_object"))
    tokenizer_s = time.perf_counter() - started
    spec = GrammarSpec.for_schema(order_schema())
    n = args.max_tokens

    # Warm up every shape first (oneDNN makes its primitives per shape, and decode's grow each step).
    for batch in (1, 16):
        warm = [SamplingParams(max_tokens=n, seed=i, ignore_eos=True) for i in range(batch)]
        decode_rate(engine, warm, prompt)
        guided_warm = [SamplingParams(max_tokens=n, seed=i, grammar=spec) for i in range(batch)]
        decode_rate(engine, guided_warm, prompt)
    rows: list[tuple[str, float, float, int]] = []
    for label, temperature in (("sampled, T=1", 1.0), ("greedy", 0.0)):
        for batch in (1, 16):
            free, constrained = [], []
            tokens = 0
            for r in range(args.rounds):
                seeds = [r * 100 + i for i in range(batch)]
                base = {"max_tokens": n, "temperature": temperature}
                plain = [SamplingParams(**base, seed=s, ignore_eos=True) for s in seeds]  # type: ignore[arg-type]
                guided = [SamplingParams(**base, seed=s, grammar=spec) for s in seeds]  # type: ignore[arg-type]
                free.append(decode_rate(engine, plain, prompt)[0])
                rate, tokens = decode_rate(engine, guided, prompt)
                constrained.append(rate)
            name = f"{label}, batch {batch}"
            rows.append((name, statistics.median(free), statistics.median(constrained), tokens))

    print(f"\nDecode tokens/s ({args.threads} threads, vocab {VOCAB}, {n} tokens per request)")
    print(f"{'requests':<24}{'no schema':>12}{'JSON schema':>14}{'ratio':>8}{'tokens/req':>12}")
    for name, free_rate, guided_rate, tokens in rows:
        print(f"{name:<24}{free_rate:>12.1f}{guided_rate:>14.1f}{guided_rate / free_rate:>8.0%}{tokens:>12}")

    fresh, cached, none, compile_s = [], [], [], []
    for i in range(9):
        new = GrammarSpec.for_schema(order_schema(f"Order{i}"))
        fresh.append(ttft(engine, SamplingParams(max_tokens=4, grammar=new), prompt))
        cached.append(ttft(engine, SamplingParams(max_tokens=4, grammar=new), prompt))
        none.append(ttft(engine, SamplingParams(max_tokens=4), prompt))
        started = time.perf_counter()
        engine.grammars.compile(GrammarSpec.for_schema(order_schema(f"Other{i}")))
        compile_s.append(time.perf_counter() - started)
    print(f"\nTime to first token, median of 9 (prompt {len(prompt)} tokens)")
    print(f"{'new schema (compiled)':<28}{statistics.median(fresh) * 1000:>9.1f} ms")
    print(f"{'same schema (cached)':<28}{statistics.median(cached) * 1000:>9.1f} ms")
    print(f"{'no schema':<28}{statistics.median(none) * 1000:>9.1f} ms")
    print(f"{'compile alone (new schema)':<28}{statistics.median(compile_s) * 1000:>9.1f} ms")
    print(f"{'grammar tokenizer (once)':<28}{tokenizer_s * 1000:>9.1f} ms")
    print(json.dumps({"schema_bytes": len(spec.source)}))


if __name__ == "__main__":
    main()
