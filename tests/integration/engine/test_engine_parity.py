"""Greedy output equals transformers' `generate` token for token, alone and in mixed batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from openmaas.engine import SamplingParams

from .conftest import ARCHS, make_engine, random_prompts

GREEDY = SamplingParams(max_tokens=24, temperature=0.0)
MIXED_LENGTHS = [1, 3, 7, 12, 16, 17, 25, 31, 32, 33, 48, 64, 70, 90, 5, 40]


@pytest.mark.parametrize("arch", ARCHS)
def test_single_request_matches_transformers(
    arch: str, model_dirs: dict[str, Path], hf_greedy: Callable
) -> None:
    engine = make_engine(model_dirs[arch])
    prompt = random_prompts([37], seed=3)[0]
    [[result]] = engine.generate([prompt], GREEDY)
    assert result.token_ids == hf_greedy(arch, prompt, 24)
    assert result.finish_reason in ("stop", "length")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "options", [{}, {"max_num_batched_tokens": 40}, {"max_num_seqs": 5, "block_size": 4}]
)
def test_16_mixed_length_requests_batched_match_transformers(
    arch: str, options: dict, model_dirs: dict[str, Path], hf_greedy: Callable
) -> None:
    # The default config prefills all 16 in one step; a 40-token budget forces chunked prefill mixed
    # with decodes; 5 running sequences and 4-token blocks force queueing and many block boundaries.
    engine = make_engine(model_dirs[arch], **options)
    prompts = random_prompts(MIXED_LENGTHS, seed=7)
    results = engine.generate(prompts, GREEDY)
    for prompt, [result] in zip(prompts, results, strict=True):
        assert result.token_ids == hf_greedy(arch, prompt, 24)
        assert result.prompt_tokens == len(prompt)
    assert engine.stats().num_free_blocks == engine.stats().num_blocks
