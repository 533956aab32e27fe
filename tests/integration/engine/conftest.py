"""Tiny random-weight Llama and Qwen2 folders (built once per session) and transformers references."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from openmaas.engine import EngineConfig, LLMEngine
from openmaas.engine.testing import build_tiny_model

ARCHS = ["llama", "qwen2"]


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine-models")
    return {
        "llama": build_tiny_model(root / "llama", "llama"),
        # Qwen2 with tied embeddings, as the small Qwen2.5 models have.
        "qwen2": build_tiny_model(root / "qwen2", "qwen2", tie_word_embeddings=True, seed=1),
    }


@pytest.fixture(scope="session")
def hf_greedy(model_dirs: dict[str, Path]) -> Callable[[str, list[int], int], list[int]]:
    """transformers' own greedy continuation of a prompt (the reference our engine must match)."""
    from transformers import AutoModelForCausalLM

    models = {
        a: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval() for a, p in model_dirs.items()
    }
    cache: dict[tuple[str, tuple[int, ...], int], list[int]] = {}

    def run(arch: str, prompt: list[int], max_new_tokens: int) -> list[int]:
        key = (arch, tuple(prompt), max_new_tokens)
        if key not in cache:
            with torch.inference_mode():
                out = models[arch].generate(
                    torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=2
                )
            cache[key] = out[0, len(prompt) :].tolist()
        return cache[key]

    return run


def make_engine(model_dir: Path, **options: object) -> LLMEngine:
    defaults: dict[str, object] = {"num_blocks": 256, "block_size": 16, "max_model_len": 1024}
    defaults.update(options)
    return LLMEngine(EngineConfig(model=str(model_dir), **defaults))  # type: ignore[arg-type]


def random_prompts(lengths: list[int], seed: int = 0, vocab: int = 500) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]
