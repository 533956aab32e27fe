"""Fidelity of quantised weights: ours (int8 / int4) against llama.cpp (Q8_0 / Q4_0), as the mean KL
divergence of next-token distributions from the bf16 model (not a test; prints a table).

The bf16 model is a folder of bf16 weights; every engine starts from exactly those values: our engine
loads the folder and quantises at load (`EngineConfig.quantization`, the code path a deployment takes),
llama.cpp gets GGUF files converted from the same folder (BF16, and Q8_0 / Q4_0 made by `llama-quantize
--pure`, as benchmarks/llm_engine.py's speed comparison uses). The reference is that model's logits
computed by transformers in fp32. For each of 64 prompts, each engine prefills the prompt (scoring its
last position) and then decodes a fixed continuation one token at a time, teacher-forced (each decoded
token is the text's next token, whatever the engine would have picked), scoring every position: both
the prefill path (dequantise and multiply, >4 rows) and the decode path (1-4 row kernels) are measured,
with our engine decoding `--batch` sequences per step (4: still the 1-4 row kernels) and llama.cpp one
(its python binding, `llama_cpp.Llama`, in .bench/venvs/llamacpp, with weight repacking off as
llama-server needs `--no-repack` on this machine). Per engine and precision it prints the mean
KL(reference || engine) over all scored positions and the share whose top-1 token equals the reference's.

Models (--models):
- `random`: the Qwen2.5-0.5B-shaped random model of llm_engine.py, in bf16. Random weights give nearly
  flat next-token distributions (entropy close to log(vocab)); the KL of any small weight perturbation
  is then tiny and top-1 agreement means little, so this model alone would hide a bad quantiser.
- `peaked` (default beside `random`): a small Qwen2-family model (4 layers, hidden 256, vocab 2048,
  tied embeddings) with random weights and its final norm weight scaled by --scale (16): its logits
  are that many times larger, so its distributions are peaked (mean entropy printed, ~1-2 nats
  against log(2048) = 7.6) and a quantiser's error moves probability between the few likely tokens,
  as on a real model. Cheap: no training.
- `trained` (opt-in): the same shape trained for --train-steps steps on Python's standard-library
  source with its own byte-level BPE, prompts from files it was not trained on: peaked because it
  learned something. On this shared 2-core host under load ~15 a step took ~20 s, too slow to be the
  default; cached in --work-dir once trained.

Caveat printed with the table: our int4 keeps the lm_head in int8 (engine/models/loader.py), while
llama.cpp's `--pure` Q4_0 quantises the tied output matrix to Q4_0 too.

    python -m benchmarks.llm_fidelity --models peaked,random --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sysconfig
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks import llamacpp
from benchmarks.llm_engine import build_model
from openmaas.engine import EngineConfig, LLMEngine, SamplingParams
from openmaas.engine.scheduler import ScheduledSequence

TRAINED = {
    "vocab_size": 2048,
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
}
# Our precisions and llama.cpp's file of the same bit width.
PAIRS = {"bfloat16": "BF16", "int8": "Q8_0", "int4": "Q4_0"}


@dataclass
class Score:
    engine: str
    precision: str
    kl: float
    top1: float
    seconds: float


# --- models ---------------------------------------------------------------------------------------
def corpus_files() -> list[Path]:
    """Python's standard library sources, in a fixed order (the same on every run on this machine)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in stdlib.glob("*.py") if p.stat().st_size > 2000)


def train_tokenizer(folder: Path, files: list[Path], vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train([str(f) for f in files], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)


def build_trained_model(folder: Path, steps: int, seed: int = 0) -> Path:
    """The small trained model (see the module docstring), saved in bf16 with its tokenizer."""
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    files = corpus_files()
    train = files[: int(len(files) * 0.9)]
    folder.mkdir(parents=True, exist_ok=True)
    train_tokenizer(folder, train, TRAINED["vocab_size"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor(tokenizer("\n".join(f.read_text(errors="replace") for f in train))["input_ids"])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**TRAINED), dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    batch, length = 8, 64
    start = time.perf_counter()
    for step in range(steps):
        offsets = torch.randint(0, len(ids) - length - 1, (batch,))
        x = torch.stack([ids[o : o + length] for o in offsets.tolist()])
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 10 == 0 or step == steps - 1:
            print(f"  training step {step}: loss {loss.item():.2f} ({time.perf_counter() - start:.0f} s)")
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    return folder


def build_peaked_model(folder: Path, scale: float, seed: int = 0) -> Path:
    """A random model of the trained one's shape whose final norm weight is multiplied by `scale`: its
    logits are `scale` times a random model's, so its next-token distributions are peaked (mean
    entropy printed) while every quantised matrix is an ordinary random one. Saved in bf16."""
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**TRAINED), dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(scale)
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    return folder


def bf16_copy(source: Path, folder: Path) -> Path:
    """`source` (the random fp32 model) saved with its weights rounded to bf16."""
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(folder)
    return folder


def sequences(model: str, folder: Path, n: int, prompt: int, scored: int) -> list[list[int]]:
    """n token sequences of prompt + scored tokens: random ids for the random model; for the trained
    one, windows of the held-out standard-library files."""
    g = torch.Generator().manual_seed(1234)
    if model in ("random", "peaked"):
        vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
        return torch.randint(0, vocab, (n, prompt + scored), generator=g).tolist()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    files = corpus_files()
    held_out = files[int(len(files) * 0.9) :]
    ids = tokenizer("\n".join(f.read_text(errors="replace") for f in held_out))["input_ids"]
    offsets = torch.randint(0, len(ids) - prompt - scored, (n,), generator=g).tolist()
    return [ids[o : o + prompt + scored] for o in offsets]


# --- logits ---------------------------------------------------------------------------------------
def reference_logits(folder: Path, seqs: list[list[int]], prompt: int, out: np.ndarray) -> None:
    """The bf16 model's logits in fp32 (transformers) at positions prompt-1 .. end-1: what each engine's
    prefill + forced decode scores."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.inference_mode():
        for i, seq in enumerate(seqs):
            logits = model(torch.tensor([seq[:-1]])).logits[0, prompt - 1 :]
            out[i] = logits.float().numpy()


def our_logits(
    folder: Path,
    precision: str,
    activations: str,
    seqs: list[list[int]],
    prompt: int,
    args: argparse.Namespace,
) -> tuple[np.ndarray, str]:
    """Our engine's logits at the scored positions, and the dtype it ran in (`activations` "auto": the
    engine's default choice): each prompt prefilled, its continuation decoded teacher-forced (the
    runner's logits are recorded, then masked so greedy sampling picks the text's token), `--batch`
    sequences at a time."""
    quant = None if precision == "bfloat16" else precision
    dtype = "bfloat16" if quant is None else activations
    config = EngineConfig(
        model=str(folder),
        dtype=dtype,
        quantization=quant,  # type: ignore[arg-type]
        max_model_len=len(seqs[0]) + 8,
        max_num_seqs=args.batch,
        kv_cache_memory_bytes=256 << 20,
        num_threads=args.threads,
    )
    engine = LLMEngine(config)
    scored = len(seqs[0]) - prompt
    out = np.empty((len(seqs), scored, engine.runner.model.lm_head.out_features), dtype=np.float32)
    forced = {f"f{i}": seq for i, seq in enumerate(seqs)}
    execute = engine.runner.execute

    def recording(scheduled: list[ScheduledSequence]) -> tuple[torch.Tensor, list, list]:
        logits, sampling, drafted = execute(scheduled)
        with torch.inference_mode():
            for row, seq in enumerate(sampling):
                made = len(seq.token_ids) - seq.num_prompt_tokens
                out[int(seq.request_id[1:]), made] = logits[row].float().numpy()
                logits[row].fill_(float("-inf"))
                logits[row, forced[seq.request_id][prompt + made]] = 0.0
        return logits, sampling, drafted

    engine.runner.execute = recording  # type: ignore[method-assign]
    params = SamplingParams(max_tokens=scored, temperature=0.0, ignore_eos=True)
    for first in range(0, len(seqs), args.batch):
        for i in range(first, min(first + args.batch, len(seqs))):
            engine.add_request(f"f{i}", seqs[i][:prompt], params)
        while engine.has_unfinished_requests:
            engine.step()
    engine.close()
    return out, str(engine.runner.dtype).removeprefix("torch.")


_LLAMA_LOGITS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import llama_cpp
    path, seq_file, out_file, prompt, threads = sys.argv[1:6]
    prompt, threads = int(prompt), int(threads)
    import llama_cpp.llama_cpp as low  # what llama_cpp.Llama calls
    default_params = low.llama_model_default_params
    def no_repack():  # llama-server's --no-repack: repacked Q8_0/Q4_0 crash on this AVX-512 CPU
        params = default_params()
        params.use_extra_bufts = False
        return params
    low.llama_model_default_params = no_repack
    seqs = json.load(open(seq_file))
    model = llama_cpp.Llama(model_path=path, n_ctx=len(seqs[0]) + 8, n_batch=512, n_threads=threads,
                            n_threads_batch=threads, logits_all=True, verbose=False, seed=0)
    out = np.lib.format.open_memmap(out_file, mode="w+", dtype=np.float32,
                                    shape=(len(seqs), len(seqs[0]) - prompt, model.n_vocab()))
    for i, seq in enumerate(seqs):
        model.reset()
        model.eval(seq[:prompt])
        out[i, 0] = model.scores[model.n_tokens - 1]
        for j in range(1, len(seq) - prompt):
            model.eval([seq[prompt + j - 1]])
            out[i, j] = model.scores[model.n_tokens - 1]
    out.flush()
    """
)


def llamacpp_logits(gguf: Path, seqs: list[list[int]], prompt: int, work: Path, threads: int) -> np.ndarray:
    """llama.cpp's logits at the scored positions (prompt evaluated as one batch, then one token per
    eval), from its python binding in a subprocess; read back memory-mapped."""
    binding = llamacpp.BENCH / "venvs" / "llamacpp" / "bin" / "python"
    seq_file, out_file = work / "seqs.json", work / f"logits-{gguf.stem}.npy"
    seq_file.write_text(json.dumps(seqs))
    cmd = [
        str(binding),
        "-c",
        _LLAMA_LOGITS,
        str(gguf),
        str(seq_file),
        str(out_file),
        str(prompt),
        str(threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"llama.cpp logits failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return np.load(out_file, mmap_mode="r")


# --- scores ---------------------------------------------------------------------------------------
def compare(reference: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """Mean KL(reference || logits) over every scored position (float64), and top-1 agreement."""
    kls, agree = [], []
    for i in range(reference.shape[0]):
        ref = torch.log_softmax(torch.from_numpy(np.asarray(reference[i])).double(), -1)
        got = torch.log_softmax(torch.from_numpy(np.array(logits[i])).double(), -1)
        kls.append((ref.exp() * (ref - got)).sum(-1))
        agree.append(ref.argmax(-1) == got.argmax(-1))
    return float(torch.cat(kls).mean()), float(torch.cat(agree).double().mean())


def mean_entropy(reference: np.ndarray) -> float:
    ent = []
    for i in range(reference.shape[0]):
        logp = torch.log_softmax(torch.from_numpy(np.asarray(reference[i])).double(), -1)
        ent.append(-(logp.exp() * logp).sum(-1))
    return float(torch.cat(ent).mean())


def run_model(name: str, folder: Path, args: argparse.Namespace) -> tuple[list[Score], float]:
    work = args.work_dir / (f"peaked-x{args.scale:g}" if name == "peaked" else name)
    seqs = sequences(name, folder, args.prompts, args.prompt_len, args.scored)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    reference = np.empty((len(seqs), args.scored, vocab), dtype=np.float32)
    reference_logits(folder, seqs, args.prompt_len, reference)
    scores: list[Score] = []
    precisions = [p for p in args.precisions.split(",") if p]
    for precision in precisions if "ours" in args.engines else []:
        for act in args.activations.split(",") if precision != "bfloat16" else ["bfloat16"]:
            start = time.perf_counter()
            logits, ran = our_logits(folder, precision, act, seqs, args.prompt_len, args)
            secs = time.perf_counter() - start
            shown = f"auto: {ran}" if act == "auto" else act
            label = precision if precision == "bfloat16" else f"{precision} ({shown} act.)"
            scores.append(Score("ours", label, *compare(reference, logits), secs))
            print(
                f"  {name}: ours {label}: KL {scores[-1].kl:.3g}, top-1 {scores[-1].top1:.1%} ({secs:.0f} s)"
            )
            del logits
    if "llama.cpp" not in args.engines:
        pass
    elif llamacpp.find_source() is not None and llamacpp.find_quantize() is not None:
        gguf_dir = work / "gguf"
        gguf_dir.mkdir(parents=True, exist_ok=True)
        for precision in precisions:
            gguf = (
                llamacpp.convert(folder, "bfloat16", gguf_dir)
                if precision == "bfloat16"
                else llamacpp.quantize(folder, precision, gguf_dir)
            )
            start = time.perf_counter()
            logits = llamacpp_logits(gguf, seqs, args.prompt_len, work, args.threads)
            secs = time.perf_counter() - start
            scores.append(Score("llama.cpp", PAIRS[precision], *compare(reference, logits), secs))
            print(
                f"  {name}: llama.cpp {PAIRS[precision]}: KL {scores[-1].kl:.3g}, top-1 {scores[-1].top1:.1%}"
            )
            del logits
            (work / f"logits-{gguf.stem}.npy").unlink(missing_ok=True)
    else:
        print("llama.cpp: not built (run benchmarks/llamacpp_setup.sh); skipped")
    return scores, mean_entropy(reference)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="peaked,random", help="peaked, random and/or trained")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/openmaas-bench/fidelity"))
    parser.add_argument("--random-dir", type=Path, default=Path("/tmp/openmaas-bench/qwen2.5-0.5b-random"))
    parser.add_argument("--precisions", default="bfloat16,int8,int4")
    parser.add_argument("--engines", default="ours,llama.cpp")
    parser.add_argument(
        "--activations",
        default="auto",
        help="our activation dtypes for quantised weights: auto (the engine's default), float32, bfloat16",
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument(
        "--scored", type=int, default=16, help="positions scored per prompt (1 prefill + decode)"
    )
    parser.add_argument("--batch", type=int, default=4, help="our sequences decoded per step")
    parser.add_argument("--train-steps", type=int, default=120)
    parser.add_argument("--scale", type=float, default=16.0, help="the peaked model's logit scale")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results: dict[str, tuple[list[Score], float]] = {}
    for name in args.models.split(","):
        if name == "trained":
            folder = build_trained_model(args.work_dir / "trained" / "model", args.train_steps)
        elif name == "peaked":
            folder = build_peaked_model(args.work_dir / f"peaked-x{args.scale:g}" / "model", args.scale)
        else:
            folder = bf16_copy(build_model(args.random_dir), args.work_dir / "random" / "model")
        results[name] = run_model(name, folder, args)
    print()
    print(f"{'model':<9}{'engine':<11}{'precision':<26}{'mean KL':>11}{'top-1':>8}{'ours/theirs KL':>16}")
    for name, (scores, entropy) in results.items():
        theirs = {s.precision: s.kl for s in scores if s.engine == "llama.cpp"}
        for s in scores:
            peer = theirs.get(PAIRS.get(s.precision.split(" ")[0], "")) if s.engine == "ours" else None
            ratio = f"{s.kl / peer:.2f}" if peer else "-"
            print(f"{name:<9}{s.engine:<11}{s.precision:<26}{s.kl:>11.3g}{s.top1:>8.1%}{ratio:>16}")
        print(
            f"{name:<9}reference mean entropy {entropy:.2f} nats, "
            f"{args.prompts} prompts x {args.scored} positions"
        )
    print(
        f"load average (1/5/15 min) at start {' '.join(f'{x:.1f}' for x in load_before)}, "
        f"at end {' '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores, shared); threads {args.threads}"
    )
    print("our int4 keeps the lm_head in int8; llama.cpp's --pure Q4_0 has its output matrix in Q4_0")


if __name__ == "__main__":
    main()
