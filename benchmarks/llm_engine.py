"""CPU benchmark of the OpenMaaS LLM engine beside transformers (prints a table; not a test).

A random-weight model of Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads / 2 KV heads,
intermediate 4864, vocab 151936, tied embeddings) is built once into --model-dir. Every request is
128 random prompt token ids and 128 greedy new tokens (eos ignored). For each dtype it reports:
ours at 1, 16 and 64 concurrent requests (batch-1 decode tokens/s, end-to-end output tokens/s
with prefill included, time to first token and inter-token latency p50/p99), transformers
`generate` at batch 1 and as one static batch of 16, and transformers `generate_batch`
(continuous batching) at 16, and llama.cpp's `llama-batched-bench` on a GGUF of the same weights (F32 /
BF16, converted once into --gguf-dir) at 1 and 16 parallel, with our figures as ratios of llama.cpp's
(llama.cpp is skipped with a message when benchmarks/llamacpp_setup.sh has not built it). For every
concurrent run of ours and of llama.cpp it splits the end-to-end time into its two phases: prefill
(until every request has its first token; prompt tokens/s) and decode (the median step with the whole
batch decoding), so a gap shows on which side it is. It also measures memory bandwidth with a large
tensor copy and states batch-1 decode as a fraction of the roofline bandwidth / weight bytes.

The host's memory bandwidth drifts by a third within minutes, so batch-1 decode is also taken in turns,
ours then llama.cpp, `--b1-rounds` times, and the ratio of the medians is reported beside the single
runs. transformers runs in a child process (its `generate_batch` leaves threads behind).

    python -m benchmarks.llm_engine --dtypes float32,bfloat16 --threads 2
    python -m benchmarks.llm_engine --dtypes bfloat16 --quant int8,int4 --prefill 128,1024 --prefill-only

The machine is shared: run it when it is quiet and read the numbers as ±15%.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import itertools
import multiprocessing
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks import llamacpp
from openmaas.engine import EngineConfig, LLMEngine, SamplingParams

# OpenMP's waiting policy is left as the environment sets it (libgomp's default: spin ~3 ms, then
# sleep), which is how both engines run for a user: llama.cpp's CPU backend uses OpenMP as well.
# OMP_WAIT_POLICY=PASSIVE (sleeping waiters) steadies both on a busy machine but slows both, llama.cpp
# more at batch 1 (BF16 36 -> 22 tokens/s here, ours 22 -> 18).
_OMP_WAIT = ", ".join(
    f"{name}={os.environ[name]}" for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if name in os.environ
)

QWEN05 = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
}


@dataclass
class Result:
    name: str
    dtype: str
    concurrency: int
    output_tokens: int = 0
    wall_s: float = 0.0
    decode_tps: float | None = None
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    prefill_s: float | None = None  # until every request had its first token
    decode_step_s: float | None = None  # median step once every request decodes

    @property
    def e2e_tps(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0


def build_model(folder: Path) -> Path:
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**QWEN05), dtype=torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def measure_bandwidth(gib: float = 1.0) -> float:
    """GB/s of a large tensor copy, counting the read and the write."""
    src = torch.ones(int(gib * (1 << 30)) // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


def huge_page_share(engine: LLMEngine) -> float:
    """The share of the first decoder layer's weights, read by our kernels, that sits on 2 MiB pages
    (from /proc/self/smaps: AnonHugePages of the mapping that holds them)."""
    model = engine.runner.model
    gate_up = model.layers[0].mlp.gate_up_proj
    address = (gate_up.weight if gate_up.quantized is None else gate_up.quantized.qweight).data_ptr()
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return 0.0
    inside, size, huge = False, 0, 0
    for line in text.splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            start, end = (int(part, 16) for part in head[0].split("-"))
            inside = start <= address < end
        elif inside and line.startswith("Size:"):
            size = int(head[1])
        elif inside and line.startswith("AnonHugePages:"):
            huge = int(head[1])
    return huge / size if size else 0.0


def prompts_for(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (length,), generator=g).tolist() for _ in range(n)]


def run_ours(engine: LLMEngine, dtype: str, prompts: list[list[int]], new_tokens: int) -> Result:
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    start = time.perf_counter()
    for i, p in enumerate(prompts):
        engine.add_request(f"bench-{start}-{i}", p, params)
    stamps: dict[str, list[float]] = {}
    full_decode_steps: list[float] = []
    before = start
    while engine.has_unfinished_requests:
        all_started = len(stamps) == len(prompts)
        outputs = engine.step()
        now = time.perf_counter()
        for out in outputs:
            stamps.setdefault(out.request_id, []).append(now)
        if all_started and len(outputs) == len(prompts):
            full_decode_steps.append(now - before)
        before = now
    wall = time.perf_counter() - start
    res = Result("openmaas", dtype, len(prompts), sum(len(s) for s in stamps.values()), wall)
    res.prompt_tokens = sum(len(p) for p in prompts)
    res.prefill_s = max(times[0] for times in stamps.values()) - start
    if full_decode_steps:
        res.decode_step_s = statistics.median(full_decode_steps)
    for times in stamps.values():
        res.ttft.append(times[0] - start)
        res.itl.extend(b - a for a, b in itertools.pairwise(times))
    if len(prompts) == 1:
        times = next(iter(stamps.values()))
        res.decode_tps = (len(times) - 1) / (times[-1] - times[0])
    return res


def run_hf_generate(model: torch.nn.Module, dtype: str, prompts: list[list[int]], new_tokens: int) -> Result:
    ids = torch.tensor(prompts)
    kwargs = {"do_sample": False, "min_new_tokens": new_tokens, "pad_token_id": 0}
    with torch.inference_mode():
        model.generate(ids[:, :8], max_new_tokens=2, **{**kwargs, "min_new_tokens": 2})  # warm-up
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=1, **{**kwargs, "min_new_tokens": 1})
        first = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, **kwargs)
        wall = time.perf_counter() - start
    produced = (out.shape[1] - ids.shape[1]) * ids.shape[0]
    res = Result("transformers generate", dtype, len(prompts), produced, wall, ttft=[first])
    res.decode_tps = (new_tokens - 1) * len(prompts) / (wall - first)
    return res


def run_hf_continuous(
    model_dir: Path, dtype: torch.dtype, name: str, prompts: list[list[int]], new: int
) -> Result:
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype, attn_implementation="paged|sdpa"
    ).eval()
    config = GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None)
    with torch.no_grad():  # generate_batch updates its own tensors in place: not inference mode
        start = time.perf_counter()
        outputs = model.generate_batch(inputs=prompts, generation_config=config, progress_bar=False)
        wall = time.perf_counter() - start
    produced = sum(len(o.generated_tokens) for o in outputs.values())
    return Result("transformers generate_batch", name, len(prompts), produced, wall)


def hf_runs(
    threads: int, model_dir: Path, dtype_name: str, runs: list[str], batched: bool, prompt_len: int, new: int
) -> list[Result]:
    """transformers' runs for one dtype (`generate1`, `static16`, `cb16`), in the calling process."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    results: list[Result] = []
    if "generate1" in runs or ("static16" in runs and batched):
        hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
        if "generate1" in runs:
            results.append(run_hf_generate(hf, dtype_name, prompts_for(1, prompt_len, 151936, 1), new))
        if "static16" in runs and batched:
            res = run_hf_generate(hf, dtype_name, prompts_for(16, prompt_len, 151936, 16), new)
            res.name, res.decode_tps = "transformers static batch", None
            results.append(res)
    if "cb16" in runs and batched:
        prompts = prompts_for(16, prompt_len, 151936, 16)
        results.append(run_hf_continuous(model_dir, dtype, dtype_name, prompts, new))
    return results


def run_hf_isolated(
    args: argparse.Namespace, model_dir: Path, dtype_name: str, runs: list[str], batched: bool
) -> list[Result]:
    """transformers' runs in a child process: `generate_batch` leaves its manager's threads (and their
    OpenMP team) behind, which slowed every later run of ours in this process (bf16 batch-1 decode
    54 -> 44 tokens/s after one cb16 run) while llama.cpp, a separate process, was untouched."""
    if not runs:
        return []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        job = pool.submit(
            hf_runs, args.threads, model_dir, dtype_name, runs, batched, args.prompt_len, args.new_tokens
        )
        return job.result()


def interleaved_decode_ab(
    model_dir: Path, dtype_name: str, prompt_len: int, steps: int
) -> tuple[float, float]:
    """Median ms per batch-1 decode step, ours and transformers' forward, taken in alternation.

    On a shared machine the load drifts between the phases of a sequential run; alternating single
    steps exposes both engines to the same load, so their ratio is the more trustworthy number.
    """
    from transformers import AutoModelForCausalLM, DynamicCache

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    engine = LLMEngine(
        EngineConfig(model=str(model_dir), dtype=dtype_name, max_model_len=1024, num_blocks=64)
    )
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    prompt = prompts_for(1, prompt_len, 151936, seed=99)[0]
    engine.add_request("ab", prompt, SamplingParams(max_tokens=steps + 2, temperature=0.0, ignore_eos=True))
    engine.step()
    ours: list[float] = []
    theirs: list[float] = []
    with torch.inference_mode():
        cache = DynamicCache(config=hf.config)
        token = hf(torch.tensor([prompt]), past_key_values=cache, logits_to_keep=1).logits[:, -1:].argmax(-1)
        for _ in range(steps):
            start = time.perf_counter()
            engine.step()
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            token = hf(token, past_key_values=cache, logits_to_keep=1).logits[:, -1:].argmax(-1)
            theirs.append(time.perf_counter() - start)
    return statistics.median(ours) * 1000, statistics.median(theirs) * 1000


def run_llamacpp(
    model_dir: Path,
    gguf_dir: Path,
    dtype_name: str,
    threads: int,
    prompt_len: int,
    new: int,
    parallel: list[int],
) -> list[Result]:
    """llama-batched-bench rows as results; [] with a message when llama.cpp is not built."""
    if llamacpp.find_batched_bench() is None or llamacpp.find_source() is None:
        print("llama.cpp: not built (run benchmarks/llamacpp_setup.sh); skipped")
        return []
    gguf = gguf_for(model_dir, dtype_name, gguf_dir)
    name = f"llama.cpp {llamacpp.QUANT_TYPES.get(dtype_name, 'batched-bench')}"
    results = []
    quant = dtype_name in llamacpp.QUANT_TYPES
    for row in llamacpp.batched_bench(gguf, threads, prompt_len, new, parallel, no_repack=quant):
        res = Result(name, dtype_name, row.parallel, row.parallel * row.new)
        res.wall_s = row.t_pp + row.t_tg
        res.prompt_tokens, res.prefill_s = row.parallel * row.prompt, row.t_pp
        res.decode_step_s = row.t_tg / row.new
        if row.parallel == 1:
            res.decode_tps = row.s_tg
        results.append(res)
    return results


def gguf_for(model_dir: Path, precision: str, gguf_dir: Path) -> Path:
    """llama.cpp's file for a precision: F32/BF16 converted, or Q8_0/Q4_0 (for int8/int4) quantised."""
    if precision in llamacpp.QUANT_TYPES:
        return llamacpp.quantize(model_dir, precision, gguf_dir)
    return llamacpp.convert(model_dir, precision, gguf_dir)


def engine_config(
    model_dir: Path, precision: str, args: argparse.Namespace, **options: object
) -> EngineConfig:
    """Our engine at a precision: a dtype, or int8/int4 weights quantised at load (activations and KV
    cache in `--quant-dtype`)."""
    quant = precision if precision in llamacpp.QUANT_TYPES else None
    defaults: dict[str, object] = {
        "max_model_len": args.prompt_len + args.new_tokens + 16,
        "max_num_seqs": 64,
        "max_num_batched_tokens": args.max_batched_tokens,
        "kv_cache_memory_bytes": 1 << 30,
        "num_threads": args.threads,
    }
    defaults.update(options)
    return EngineConfig(
        model=str(model_dir),
        dtype=args.quant_dtype if quant else precision,
        quantization=quant,  # type: ignore[arg-type]
        **defaults,  # type: ignore[arg-type]
    )


def step_weight_bytes(engine: LLMEngine) -> int:
    """The weight bytes a batch-1 decode step reads: every matrix (quantised ones at their size), the
    small vectors, and the embedding only where it is also the (float) output matrix."""
    from openmaas.engine.models.linear import Linear

    model = engine.runner.model
    total = 0
    for m in model.modules():
        if isinstance(m, Linear) and m.quantized is not None:
            total += m.quantized.nbytes
    embed = model.embed_tokens.weight
    for p in model.parameters():
        if p is not embed or model.lm_head.weight is embed:
            total += p.numel() * p.element_size()
    return total


def measure_prefill(
    model_dir: Path, precision: str, args: argparse.Namespace, lengths: list[int], repeats: int = 3
) -> dict[int, float]:
    """Our prefill tokens/s for one prompt of each length, computed in one step (the token budget is the
    longest prompt); the median of `repeats` prompts (different tokens: no prefix-cache hits)."""
    longest = max(lengths)
    config = engine_config(
        model_dir, precision, args, max_model_len=longest + 16, max_num_batched_tokens=longest, max_num_seqs=4
    )
    engine = LLMEngine(config)
    params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    engine.generate(prompts_for(1, 32, 151936, seed=7), params)  # warm-up
    tps = {}
    for length in lengths:
        times = []
        for i in range(repeats):
            start = time.perf_counter()
            engine.generate(prompts_for(1, length, 151936, seed=1000 * length + i), params)
            times.append(time.perf_counter() - start)
        tps[length] = length / statistics.median(times)
    del engine
    gc.collect()
    return tps


def llamacpp_prefill(
    model_dir: Path, precision: str, args: argparse.Namespace, lengths: list[int]
) -> dict[int, float]:
    """llama.cpp's prompt tokens/s (llama-batched-bench -npp L -ntg 1 -npl 1) on its file of the precision."""
    if llamacpp.find_batched_bench() is None or llamacpp.find_source() is None:
        return {}
    gguf = gguf_for(model_dir, precision, args.gguf_dir)
    return {
        length: row.prompt / row.t_pp
        for length in lengths
        for row in llamacpp.batched_bench(
            gguf, args.threads, length, 1, [1], no_repack=precision in llamacpp.QUANT_TYPES
        )
    }


def print_prefill(ours: dict[str, dict[int, float]], theirs: dict[str, dict[int, float]]) -> None:
    print(f"  {'prefill tokens/s':<18}{'prompt':>7}{'ours':>9}{'llama.cpp':>11}{'ours/theirs':>13}")
    for precision, rows in ours.items():
        for length, tps in rows.items():
            peer = theirs.get(precision, {}).get(length)
            ratio = f"{tps / peer:.0%}" if peer else "-"
            their = f"{peer:.0f}" if peer else "-"
            print(f"  {precision:<18}{length:>7}{tps:>9.0f}{their:>11}{ratio:>13}")


def alternate_batch1(
    engine: LLMEngine, args: argparse.Namespace, model_dir: Path, dtype_name: str
) -> tuple[list[float], list[float]]:
    """Batch-1 decode tokens/s of ours and of llama.cpp, taken in turns `--b1-rounds` times: the shared
    host's memory bandwidth drifts by a third within minutes, so one run of each, minutes apart, can
    compare a fast moment with a slow one (both directions seen)."""
    ours: list[float] = []
    theirs: list[float] = []
    for i in range(args.b1_rounds):
        prompt = prompts_for(1, args.prompt_len, 151936, seed=100 + i)
        ours.append(run_ours(engine, dtype_name, prompt, args.new_tokens).decode_tps or 0.0)
        rows = run_llamacpp(
            model_dir, args.gguf_dir, dtype_name, args.threads, args.prompt_len, args.new_tokens, [1]
        )
        if not rows:
            return ours, []
        theirs.append(rows[0].decode_tps or 0.0)
    return ours, theirs


def print_ratios(results: list[Result]) -> None:
    """Ours as a fraction of llama.cpp's: batch-1 decode and end-to-end output tokens/s per concurrency."""
    peer = {(r.dtype, r.concurrency): r for r in results if r.name.startswith("llama.cpp")}
    for r in results:
        p = peer.get((r.dtype, r.concurrency))
        if r.name != "openmaas" or p is None:
            continue
        line = f"  ours / llama.cpp, {r.dtype}, {r.concurrency} concurrent: e2e {r.e2e_tps / p.e2e_tps:.0%}"
        if r.decode_tps and p.decode_tps:
            line += f", batch-1 decode {r.decode_tps / p.decode_tps:.0%} (target >= 90%)"
        elif r.concurrency > 1:
            line += " (target > 100%)"
        print(line)


def print_phases(results: list[Result]) -> None:
    """Prefill (prompt tokens/s) and decode (ms per step of the whole batch) of each concurrent run."""
    rows = [r for r in results if r.concurrency > 1 and r.prefill_s]
    if not rows:
        return
    head = f"{'phases':<28}{'dtype':<10}{'conc':>5}{'prefill s':>10}{'prompt t/s':>11}{'decode step ms':>15}"
    print(f"  {head}")
    for r in rows:
        assert r.prefill_s is not None
        step = f"{r.decode_step_s * 1000:.0f}" if r.decode_step_s else "-"
        print(
            f"  {r.name:<28}{r.dtype:<10}{r.concurrency:>5}{r.prefill_s:>10.2f}"
            f"{r.prompt_tokens / r.prefill_s:>11.0f}{step:>15}"
        )


def pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000:.0f}"


def print_table(results: list[Result], bandwidth: float, weight_bytes: dict[str, int]) -> None:
    head = f"{'engine':<28}{'dtype':<10}{'conc':>5}{'decode t/s':>11}{'e2e t/s':>9}"
    head += f"{'TTFT p50/p99 ms':>17}{'ITL p50/p99 ms':>16}{'roofline':>10}"
    print(head)
    print("-" * len(head))
    for r in results:
        decode = f"{r.decode_tps:.2f}" if r.decode_tps else "-"
        roof = "-"
        if r.decode_tps and r.concurrency == 1:
            roof = f"{r.decode_tps / (bandwidth * 1e9 / weight_bytes[r.dtype]):.0%}"
        ttft = f"{pct(r.ttft, 0.5)}/{pct(r.ttft, 0.99)}"
        itl = f"{pct(r.itl, 0.5)}/{pct(r.itl, 0.99)}"
        print(
            f"{r.name:<28}{r.dtype:<10}{r.concurrency:>5}{decode:>11}{r.e2e_tps:>9.1f}{ttft:>17}{itl:>16}{roof:>10}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/openmaas-bench/qwen2.5-0.5b-random"))
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--hf", default="generate1,static16,cb16", help="transformers runs ('' for none)")
    parser.add_argument("--hf-batched-dtypes", default="float32", help="dtypes for static16/cb16")
    parser.add_argument(
        "--llamacpp", default="1,16", help="llama-batched-bench parallel levels ('' for none)"
    )
    parser.add_argument("--gguf-dir", type=Path, default=Path("/tmp/openmaas-bench/gguf"))
    parser.add_argument("--ab-steps", type=int, default=12, help="interleaved batch-1 decode steps (0: skip)")
    parser.add_argument(
        "--b1-rounds",
        type=int,
        default=3,
        help="batch-1 decode of ours and llama.cpp taken in turns (0: skip)",
    )
    parser.add_argument(
        "--quant",
        default="int8,int4",
        help="our weight-only quantisations, each against llama.cpp's Q8_0 / Q4_0 ('' for none)",
    )
    parser.add_argument(
        "--quant-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="activation and KV-cache dtype of our quantised runs (float32: what dtype auto gives a "
        "quantised model on a CPU)",
    )
    parser.add_argument(
        "--prefill",
        default="128,1024",
        help="prompt lengths for the prefill comparison, at every dtype and quantisation ('' for none)",
    )
    parser.add_argument(
        "--max-batched-tokens",
        type=int,
        default=None,
        help="our engine's token budget per step (default: its own)",
    )
    parser.add_argument(
        "--prefill-only",
        action="store_true",
        help="only the prefill comparison (--prefill), no decode, end-to-end or transformers runs",
    )
    args = parser.parse_args()
    if args.prefill_only:
        args.concurrency, args.hf, args.ab_steps, args.b1_rounds = "", "", 0, 0
    torch.set_num_threads(args.threads)
    model_dir = build_model(args.model_dir)
    bandwidth = measure_bandwidth()
    load_before = os.getloadavg()[0]
    n_params = 0
    results: list[Result] = []
    turns: dict[str, tuple[list[float], list[float]]] = {}
    weight_bytes: dict[str, int] = {}
    kernels_on = False
    quants = [q for q in args.quant.split(",") if q]
    for dtype_name in [*args.dtypes.split(","), *quants] if not args.prefill_only else []:
        engine = LLMEngine(engine_config(model_dir, dtype_name, args))
        weight_bytes[dtype_name] = step_weight_bytes(engine)
        kernels_on = engine.runner.kernels is not None
        if kernels_on:
            print(f"  {dtype_name}: weights on 2 MiB pages: {huge_page_share(engine):.0%}")
        n_params = sum(p.numel() for p in engine.runner.model.parameters())
        run_ours(engine, dtype_name, prompts_for(2, 16, 1000, seed=0), 4)  # warm-up
        for conc in (int(c) for c in args.concurrency.split(",") if c):
            res = run_ours(
                engine, dtype_name, prompts_for(conc, args.prompt_len, 151936, seed=conc), args.new_tokens
            )
            results.append(res)
            print_table([res], bandwidth, weight_bytes)
        if args.b1_rounds and args.llamacpp:
            turns[dtype_name] = alternate_batch1(engine, args, model_dir, dtype_name)
        del engine
        gc.collect()
        if args.llamacpp:
            levels = [int(c) for c in args.llamacpp.split(",")]
            for res in run_llamacpp(
                model_dir, args.gguf_dir, dtype_name, args.threads, args.prompt_len, args.new_tokens, levels
            ):
                results.append(res)
                print_table([res], bandwidth, weight_bytes)
    prefill_lengths = [int(n) for n in args.prefill.split(",") if n]
    prefill_ours: dict[str, dict[int, float]] = {}
    prefill_theirs: dict[str, dict[int, float]] = {}
    for precision in [*(d for d in args.dtypes.split(",") if d), *quants] if prefill_lengths else []:
        prefill_ours[precision] = measure_prefill(model_dir, precision, args, prefill_lengths)
        if args.llamacpp:
            prefill_theirs[precision] = llamacpp_prefill(model_dir, precision, args, prefill_lengths)
        print_prefill({precision: prefill_ours[precision]}, prefill_theirs)
    # transformers last, for every dtype: the exit of its child process (several GB freed) slowed the
    # next minute of whatever ran after it (our bf16 batch-1 decode 32 instead of 54-58 tokens/s).
    for dtype_name in [d for d in args.dtypes.split(",") if d]:
        runs = [r for r in args.hf.split(",") if r]
        batched = dtype_name in args.hf_batched_dtypes.split(",")
        for res in run_hf_isolated(args, model_dir, dtype_name, runs, batched):
            results.append(res)
            print_table([res], bandwidth, weight_bytes)
    print()
    ab: dict[str, tuple[float, float]] = {}
    for dtype_name in args.dtypes.split(",") if args.ab_steps else []:
        ab[dtype_name] = interleaved_decode_ab(model_dir, dtype_name, args.prompt_len, args.ab_steps)
        gc.collect()
    print(
        f"threads {args.threads}, OpenMP waiting: {_OMP_WAIT or 'default'}, "
        f"1-min load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end (2 cores, shared)"
    )
    print(f"memory bandwidth (copy, read+write): {bandwidth:.1f} GB/s; parameters {n_params / 1e6:.0f} M")
    budget = EngineConfig(max_num_batched_tokens=args.max_batched_tokens).step_token_budget
    if not args.prefill_only:  # no decode engine was built: nothing to say about its kernels
        print(f"ours: token budget {budget} per step, our CPU kernels {'on' if kernels_on else 'off'}")
    for name, nbytes in weight_bytes.items():
        print(
            f"  {name}: weights {nbytes / 1e9:.2f} GB -> batch-1 roofline "
            f"{bandwidth * 1e9 / nbytes:.1f} tokens/s"
        )
    for name, (ours_ms, hf_ms) in ab.items():
        print(
            f"  {name}: interleaved batch-1 decode step, median of {args.ab_steps}: ours {ours_ms:.0f} ms "
            f"({1000 / ours_ms:.2f} tokens/s), transformers forward {hf_ms:.0f} ms "
            f"({1000 / hf_ms:.2f} tokens/s)"
        )
    print_ratios(results)
    for dtype_name, (ours, theirs) in turns.items():
        if ours and theirs:
            pairs = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(ours, theirs, strict=False))
            ratio = statistics.median(ours) / statistics.median(theirs)
            print(
                f"  batch-1 decode in turns, {dtype_name}, ours/llama.cpp tokens/s: {pairs} -> medians "
                f"{ratio:.0%} (target >= 90%)"
            )
    print_phases(results)
    if prefill_ours:
        print_prefill(prefill_ours, prefill_theirs)
    print()
    print_table(results, bandwidth, weight_bytes)


if __name__ == "__main__":
    main()
