"""The engine's parity checks in bf16 on CUDA (skipped without a GPU). CPU twins: tests/integration/engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from openmaas.engine import AsyncLLMEngine, EngineConfig, LLMEngine, SamplingParams
from openmaas.engine.parity import first_divergence
from openmaas.engine.testing import build_tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

NOISE = 0.15
LENGTHS = [1, 3, 7, 12, 16, 17, 25, 31, 32, 33, 48, 64, 70, 90, 5, 40]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = request.param
    return build_tiny_model(tmp_path_factory.mktemp(arch), arch, tie_word_embeddings=arch == "qwen2")


def _engine(path: Path, **options: object) -> LLMEngine:
    config = {
        "num_blocks": 512,
        "block_size": 16,
        "max_model_len": 1024,
        "device": "cuda",
        "dtype": "bfloat16",
    }
    config.update(options)
    return LLMEngine(EngineConfig(model=str(path), **config))  # type: ignore[arg-type]


def _prompts(lengths: list[int], seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 500, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("lengths", [[37], LENGTHS])
def test_bf16_greedy_matches_transformers_within_noise(model_dir: Path, lengths: list[int]) -> None:
    from transformers import AutoModelForCausalLM

    hf16 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    hf32 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda().eval()
    prompts = _prompts(lengths, seed=7)
    results = _engine(model_dir).generate(
        prompts,
        SamplingParams(max_tokens=24, temperature=0.0),  # both stop at eos
    )
    for prompt, [result] in zip(prompts, results, strict=True):
        with torch.inference_mode():
            ids = torch.tensor([prompt], device="cuda")
            out = hf16.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=0)
        divergence = first_divergence(hf32, prompt, result.token_ids, out[0, len(prompt) :].tolist())
        assert divergence is None or divergence.logit_gap < NOISE, divergence


def test_preemption_and_prefix_cache_on_gpu(model_dir: Path) -> None:
    engine = _engine(model_dir, num_blocks=12, block_size=4, dtype="float32")
    prompts = _prompts([9, 14, 20, 5, 17, 11], seed=5)
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    results = engine.generate(prompts, params)
    alone = [_engine(model_dir, dtype="float32").generate([p], params)[0][0].token_ids for p in prompts]
    assert engine.stats().num_preemptions > 0
    assert [r[0].token_ids for r in results] == alone
    assert engine.stats().num_free_blocks == 12


def test_async_streams_on_gpu(model_dir: Path) -> None:
    front = AsyncLLMEngine(_engine(model_dir))
    params = SamplingParams(max_tokens=12, temperature=0.0)

    async def main() -> list[int]:
        async def one(p: list[int]) -> int:
            return sum([len(o.new_token_ids) async for o in front.generate(p, params)])

        return await asyncio.gather(*(one(p) for p in _prompts([10] * 32, seed=3)))

    try:
        counts = asyncio.run(main())
    finally:
        front.shutdown()
    assert len(counts) == 32 and all(1 <= c <= 12 for c in counts)
