"""CPU benchmark of speculative decoding by n-gram prompt lookup (engine/speculative.py); not a test.

Three measurements, each with speculation off and on in the same process, taken in turns (the shared
host's speed drifts within minutes) and reported as the ratio of the medians:

1. Verification cost, on the Qwen2.5-0.5B-shaped random model of benchmarks/llm_engine.py: the model
   runner's time for a 1-row decode step against a 1 + k row verification step of the same sequence
   (what `ROW_COST` in engine/speculative.py is set from).
2. An input-grounded workload on a model of the same shape whose weights make it count (its greedy
   next token is the last token's id + 1; `build_counting_model`): a random-weight model does not
   copy its prompt, and training one to (a 2-layer copy model) took ~2.5 s per step on this shared
   2-core host, too slow for a benchmark. Each prompt holds a run of 200 consecutive ids (the
   passage), 24 random filler ids, then the run's 51st and 52nd ids: the answer copies the rest of
   the passage, as "repeat this passage" answers copy theirs. Batch-1 decode tokens/s.
3. Random prompts on the same counting model: its answer (x + 1, x + 2, ...) occurs nowhere earlier,
   so nothing matches and nothing is guessed: what the lookup costs a request it cannot help.

The acceptance (accepted / proposed guesses) of each workload is printed with it.

    python -m benchmarks.speculative --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from benchmarks.llm_engine import build_model, prompts_for
from openmaas.engine import EngineConfig, LLMEngine, SamplingParams
from openmaas.engine.scheduler import ScheduledSequence


def build_counting_model(random_dir: Path, folder: Path) -> Path:
    """The Qwen2.5-0.5B-shaped model, its weights set so that its greedy next token is always the last
    token's id plus one: it counts. Every matrix keeps its shape (a step reads and multiplies exactly
    what the random model's does), only the values differ.

    Token x embeds as 64 (cos, sin) pairs at frequencies w_m (the first 128 dimensions); rotating each
    pair by w_m gives token x + 1's embedding, and the tied output layer scores y by
    sum_m cos((y - x - 1) w_m), largest at y = x + 1. Layer 0's attention attends to the current
    position only (constant q/k biases on the fastest rotary pairs: a sharp peak at distance 0) and
    adds (rotation - identity) of it through v_proj and o_proj; every other layer's output
    projections are zero."""
    if (folder / "config.json").exists():
        return folder
    import shutil

    from safetensors.torch import load_file, save_file

    weights = load_file(str(random_dir / "model.safetensors"))
    hidden, vocab, pairs, head = 896, 151936, 64, 64
    g = torch.Generator().manual_seed(0)
    freqs = torch.rand(pairs, generator=g, dtype=torch.float64) * 2.9 + 0.1
    angles = torch.arange(vocab, dtype=torch.float64)[:, None] * freqs[None, :]
    embed = torch.zeros((vocab, hidden), dtype=torch.float64)
    embed[:, 0 : 2 * pairs : 2], embed[:, 1 : 2 * pairs : 2] = angles.cos(), angles.sin()
    rotation = torch.zeros((2 * pairs, 2 * pairs), dtype=torch.float64)
    for m, w in enumerate(freqs.tolist()):
        c, s_ = torch.tensor(w).cos(), torch.tensor(w).sin()
        rotation[2 * m : 2 * m + 2, 2 * m : 2 * m + 2] = torch.tensor([[c, -s_], [s_, c]])
    scale = (hidden / (2 * pairs)) ** 0.5  # what the input RMSNorm multiplies an embedding by
    mix = (rotation - torch.eye(2 * pairs, dtype=torch.float64)) / scale
    for name, value in weights.items():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            value.zero_()
        elif name.endswith("norm.weight"):
            value.fill_(1.0)
    weights["model.embed_tokens.weight"] = embed.float()
    bias = torch.zeros(head)
    bias[:8] = 16.0  # the 8 fastest rotary pairs: q.k peaks sharply at distance 0
    first = "model.layers.0.self_attn."
    weights[first + "q_proj.weight"].zero_()
    weights[first + "k_proj.weight"].zero_()
    weights[first + "q_proj.bias"] = bias.repeat(14)
    weights[first + "k_proj.bias"] = bias.repeat(2)
    v = torch.zeros((2 * head, hidden))
    v[:, : 2 * pairs] = torch.eye(2 * pairs)
    weights[first + "v_proj.weight"], weights[first + "v_proj.bias"] = v, torch.zeros(2 * head)
    o = weights[first + "o_proj.weight"]
    o[: 2 * pairs, 0:head] = mix[:, :head].float()  # q head 0 reads KV head 0 (dimensions 0-63)
    o[: 2 * pairs, 7 * head : 8 * head] = mix[:, head:].float()  # q head 7 reads KV head 1 (64-127)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "model.safetensors"))
    shutil.copy(random_dir / "config.json", folder / "config.json")
    return folder


def decode_run(engine: LLMEngine, prompt: list[int], new_tokens: int) -> tuple[float, int, int]:
    """(batch-1 decode tokens/s after the first token, guesses proposed, guesses accepted)."""
    before = engine.stats()
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    engine.add_request(f"b{time.perf_counter()}", prompt, params)
    first = last = 0.0
    produced = 0
    while engine.has_unfinished_requests:
        outs = engine.step()
        now = time.perf_counter()
        for out in outs:
            if produced == 0:
                first = now
            produced += len(out.new_token_ids)
            last = now
    after = engine.stats()
    proposed = after.spec_draft_tokens - before.spec_draft_tokens
    accepted = after.spec_accepted_tokens - before.spec_accepted_tokens
    return (produced - 1) / (last - first), proposed, accepted


def in_turns(
    plain: LLMEngine, spec: LLMEngine, prompts: list[list[int]], new_tokens: int
) -> tuple[float, float, float]:
    """Median tokens/s off and on, one prompt each in turn, and the acceptance over all prompts."""
    off, on, proposed, accepted = [], [], 0, 0
    for prompt in prompts:
        off.append(decode_run(plain, prompt, new_tokens)[0])
        tps, p, a = decode_run(spec, prompt, new_tokens)
        on.append(tps)
        proposed, accepted = proposed + p, accepted + a
    return statistics.median(off), statistics.median(on), accepted / proposed if proposed else 0.0


def verification_cost(
    model_dir: Path, dtype: str, ks: list[int], rounds: int
) -> dict[int, tuple[float, float]]:
    """Per k: median ms of the runner's 1-row decode step and of a 1 + k row verification, in turns."""
    engine = LLMEngine(EngineConfig(model=str(model_dir), dtype=dtype, max_model_len=1024, num_blocks=64))
    prompt = prompts_for(1, 128, 151936, seed=5)[0]
    engine.add_request("cost", prompt, SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True))
    engine.step()  # the prefill
    seq = engine.scheduler.running[0]
    engine.block_manager.allocate(seq, [], seq.num_tokens + max(ks))
    times: dict[int, tuple[list[float], list[float]]] = {k: ([], []) for k in ks}
    for _ in range(rounds):
        for k, (one, verify) in times.items():
            for draft, out in (((), one), (tuple(prompt[:k]), verify)):
                start = time.perf_counter()
                engine.runner.execute([ScheduledSequence(seq, 1 + len(draft), draft)])
                out.append(time.perf_counter() - start)
    return {k: (statistics.median(one) * 1000, statistics.median(v) * 1000) for k, (one, v) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/openmaas-bench/qwen2.5-0.5b-random"))
    parser.add_argument(
        "--counting-dir", type=Path, default=Path("/tmp/openmaas-bench/qwen2.5-0.5b-counting")
    )
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=4, help="speculative_tokens")
    parser.add_argument("--lookup", default="2,4", help="prompt_lookup_min,max")
    parser.add_argument("--prompts", type=int, default=5, help="prompts per workload (turns)")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--skip", default="", help="comma-separated: cost,copy,random")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    low, high = (int(x) for x in args.lookup.split(","))
    spec_options = {"speculative_tokens": args.k, "prompt_lookup_min": low, "prompt_lookup_max": high}
    print(f"threads {args.threads}, k {args.k}, lookup n {low}..{high}, load average {os.getloadavg()}")

    if "cost" not in skip:
        model = build_model(args.model_dir)
        for k, (one, verify) in verification_cost(model, args.dtype, sorted({1, 2, args.k, 8}), 7).items():
            print(
                f"0.5B {args.dtype}: 1-row step {one:.1f} ms, 1+{k}-row verification {verify:.1f} ms: "
                f"{verify / one:.2f}x, {(verify / one - 1) / k:.3f} of a step per guessed row"
            )

    if "copy" not in skip or "random" not in skip:
        model = build_counting_model(build_model(args.model_dir), args.counting_dir)
        options = {"model": str(model), "dtype": args.dtype, "max_model_len": 1024, "num_blocks": 64}
        plain = LLMEngine(EngineConfig(**options))  # type: ignore[arg-type]
        spec = LLMEngine(EngineConfig(**options, **spec_options))  # type: ignore[arg-type]
    if "copy" not in skip:
        # A passage (the run the model will count through), filler, then the passage's two tokens to
        # continue from: the answer copies the rest of the passage, as "repeat this" answers do.
        g = torch.Generator().manual_seed(7)
        prompts = []
        for _ in range(args.prompts):
            start = int(torch.randint(1000, 150000, (1,), generator=g))
            filler = prompts_for(1, 24, 151936, seed=start)[0]
            prompts.append([*range(start, start + 200), *filler, start + 50, start + 51])
        off, on, acceptance = in_turns(plain, spec, prompts, args.new_tokens)
        print(
            f"(a) copy a span of the prompt, 0.5B-shaped counting model {args.dtype}: {off:.2f} -> {on:.2f} "
            f"tokens/s, {on / off:.2f}x, acceptance {acceptance:.2f}, load average {os.getloadavg()}"
        )

    if "random" not in skip:
        # Random prompts: the counting answer (x + 1, x + 2, ...) occurs nowhere before, nothing matches.
        prompts = [prompts_for(1, 128, 151936, seed=200 + i)[0] for i in range(args.prompts)]
        off, on, acceptance = in_turns(plain, spec, prompts, args.new_tokens)
        print(
            f"(b) random prompts, 0.5B-shaped counting model {args.dtype}: {off:.2f} -> {on:.2f} tokens/s, "
            f"{on / off:.2f}x, acceptance {acceptance:.2f}, load average {os.getloadavg()}"
        )


if __name__ == "__main__":
    main()
