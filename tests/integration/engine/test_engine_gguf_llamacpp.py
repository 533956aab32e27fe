"""GGUF files written by llama.cpp's own converter (convert_hf_to_gguf.py, from the source the
benchmark builds under .bench/) load into our engine, and our greedy tokens equal llama.cpp's on the
same file (its python binding, run as a subprocess). Skipped where that source or binding is absent.

`OPENMAAS_BENCH_DIR` names the .bench folder where it is not the repository's own (a git worktree).
The tiny models' tokenizer is trained here, so the converter is told its pre-tokenizer ("gpt-2", what it
is); both engines are fed token ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

from openmaas.engine import SamplingParams
from openmaas.engine.models import gguf
from openmaas.engine.parity import first_divergence

from .conftest import make_engine, random_prompts

BENCH = Path(os.environ.get("OPENMAAS_BENCH_DIR") or Path(__file__).resolve().parents[3] / ".bench")
SOURCES = sorted((BENCH / "llamacpp-src").glob("llama_cpp_python-*/vendor/llama.cpp"))
BINDING = BENCH / "venvs" / "llamacpp" / "bin" / "python"
pytestmark = pytest.mark.skipif(
    not SOURCES, reason=f"no llama.cpp source under {BENCH} (benchmarks/llamacpp_setup.sh)"
)

_CONVERT = textwrap.dedent(
    """
    import sys
    import convert_hf_to_gguf as c
    from conversion import base, llama, qwen
    # A home-trained byte-level BPE: skip the SentencePiece attempts; its pre-tokenizer is GPT-2's.
    llama.LlamaModel.set_vocab = lambda self: self._set_vocab_gpt2()
    qwen.Qwen2Model.set_vocab = lambda self: self._set_vocab_gpt2()
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
    c.main()
    """
)

_GREEDY = textwrap.dedent(
    """
    import json, sys
    import llama_cpp
    # llama-server's --no-repack: with the llama.cpp of llama-cpp-python 0.3.36, repacking Q8_0 weights
    # for this AVX-512 CPU segfaults at load (exit -11); the values and arithmetic stay llama.cpp's.
    import llama_cpp.llama_cpp as low  # what llama_cpp.Llama calls
    default_params = low.llama_model_default_params
    def no_repack():
        params = default_params()
        params.use_extra_bufts = False
        return params
    low.llama_model_default_params = no_repack
    path, prompts, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    model = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, verbose=False, seed=0)
    out = []
    for prompt in prompts:
        model.reset()
        tokens = []
        for token in model.generate(prompt, temp=0.0, top_k=1, reset=True):
            tokens.append(int(token))
            if len(tokens) == n:
                break
        out.append(tokens)
    print(json.dumps(out))
    """
)


def _convert(model_dir: Path, out: Path, outtype: str) -> Path:
    source = SOURCES[-1]
    env = {**os.environ, "PYTHONPATH": f"{source}:{source / 'gguf-py'}"}
    cmd = [sys.executable, "-c", _CONVERT, str(model_dir), "--outfile", str(out), "--outtype", outtype]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=source, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _binding_missing() -> str | None:
    if not BINDING.exists():
        return f"no llama.cpp python binding at {BINDING.parent.parent}"
    if subprocess.run([str(BINDING), "-c", "import llama_cpp"], capture_output=True).returncode:
        return f"llama_cpp does not import in {BINDING.parent.parent}"
    return None


def _llamacpp_greedy(file: Path, prompts: list[list[int]], n: int) -> list[list[int]]:
    cmd = [str(BINDING), "-c", _GREEDY, str(file), json.dumps(prompts), str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


PARAMS = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)


def _ours(folder: Path, prompts: list[list[int]]) -> list[list[int]]:
    return [r[0].token_ids for r in make_engine(folder, cpu_kernels=False).generate(prompts, PARAMS)]


@pytest.fixture(scope="module")
def converted(model_dirs, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:  # type: ignore[no-untyped-def]
    """(arch, outtype) -> the folder of the converter's file with its companions, converted once."""
    folders: dict[tuple[str, str], Path] = {}

    def get(arch: str, outtype: str) -> Path:
        if (arch, outtype) not in folders:
            folder = tmp_path_factory.mktemp(f"converted-{arch}-{outtype}")
            gguf.prepare_folder(_convert(model_dirs[arch], folder / "model.gguf", outtype))
            folders[arch, outtype] = folder
        return folders[arch, outtype]

    return get


def test_the_converters_f32_file_generates_as_the_folder(model_dirs, converted) -> None:  # type: ignore[no-untyped-def]
    """A `llama` file: its Q/K rows come permuted, and are un-permuted exactly."""
    prompts = random_prompts([9, 21], seed=11)
    assert _ours(converted("llama", "f32"), prompts) == _ours(model_dirs["llama"], prompts)


# llama.cpp multiplies Q8_0 weights by activations it rounds to 8 bits as well (its vec_dot_q8_0_q8_0);
# our reference keeps them in float. A greedy pick may flip where the two best logits are this close
# (a flip measured here: 0.025 apart, at logits around 4).
Q8_NOISE = 0.1


@pytest.mark.parametrize(("arch", "outtype"), [("llama", "f32"), ("qwen2", "q8_0")])
def test_our_greedy_tokens_equal_llamacpps(arch, outtype, model_dirs, converted) -> None:  # type: ignore[no-untyped-def]
    """Exact in F32; in Q8_0, equal or apart only where the file's own weights (in float32, through
    transformers) put the two choices within Q8_NOISE."""
    if (missing := _binding_missing()) is not None:
        pytest.skip(missing)
    folder = converted(arch, outtype)
    prompts = random_prompts([9, 21], seed=11)
    ours, theirs = _ours(folder, prompts), _llamacpp_greedy(folder / "model.gguf", prompts, 10)
    if outtype == "f32":
        assert ours == theirs
        return
    reference = _quantised_reference(model_dirs[arch], GGMLQuantizationType.Q8_0)
    for prompt, a, b in zip(prompts, ours, theirs, strict=True):
        divergence = first_divergence(reference, prompt, a, b)
        assert divergence is None or divergence.logit_gap < Q8_NOISE, divergence


def _quantised_reference(folder: Path, qtype: GGMLQuantizationType) -> torch.nn.Module:
    """The transformers model of `folder` with every matrix as the file holds it (quantised, in float)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                values = gguf_quants.dequantize(gguf_quants.quantize(param.numpy(), qtype), qtype)
                param.copy_(torch.from_numpy(values))
    return model
