"""Prefix caching reuses KV blocks without changing output; preemption under a tiny pool recovers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from openmaas.engine import SamplingParams

from .conftest import make_engine, random_prompts

GREEDY = SamplingParams(max_tokens=16, temperature=0.0)


def test_shared_prefix_reuses_blocks_and_keeps_output(
    model_dirs: dict[str, Path], hf_greedy: Callable
) -> None:
    engine = make_engine(model_dirs["llama"], block_size=8)
    prefix = random_prompts([40], seed=11)[0]  # 5 full blocks
    first = [*prefix, 7, 8, 9]
    second = [*prefix, 10, 11, 12, 13]
    [[a]] = engine.generate([first], GREEDY)
    assert engine.stats().prefix_cache_hit_blocks == 0
    [[b]] = engine.generate([second], GREEDY)
    assert engine.stats().prefix_cache_hit_blocks == 5
    assert a.token_ids == hf_greedy("llama", first, 16)
    assert b.token_ids == hf_greedy("llama", second, 16)
    # A prompt that is entirely cached still recomputes its last token and gives the same output.
    [[again]] = engine.generate([first], GREEDY)
    assert again.token_ids == a.token_ids
    assert engine.stats().prefix_cache_hit_blocks == 10


def test_prefix_caching_off_reuses_nothing(model_dirs: dict[str, Path]) -> None:
    engine = make_engine(model_dirs["llama"], block_size=8, enable_prefix_caching=False)
    prompt = random_prompts([40], seed=11)[0]
    engine.generate([prompt, prompt], GREEDY)
    assert engine.stats().prefix_cache_hit_blocks == 0


def test_preemption_under_tiny_block_pool_completes_correctly(
    model_dirs: dict[str, Path], hf_greedy: Callable
) -> None:
    # 12 blocks of 4 tokens = 48 slots for 6 requests that need up to 40 each: constant preemption.
    engine = make_engine(model_dirs["qwen2"], num_blocks=12, block_size=4, enable_prefix_caching=False)
    prompts = random_prompts([9, 14, 20, 5, 17, 11], seed=5)
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    results = engine.generate(prompts, params)
    assert engine.stats().num_preemptions > 0
    for prompt, [result] in zip(prompts, results, strict=True):
        expected = hf_greedy("qwen2", prompt, 20)
        # transformers stops at eos; with ignore_eos we may go past it, so compare its whole output.
        assert result.token_ids[: len(expected)] == expected
        assert result.finish_reason == "length" and len(result.token_ids) == 20
    assert engine.stats().num_free_blocks == 12


def test_preemption_with_prefix_caching_completes_correctly(
    model_dirs: dict[str, Path], hf_greedy: Callable
) -> None:
    engine = make_engine(model_dirs["llama"], num_blocks=14, block_size=4)
    shared = random_prompts([12], seed=9)[0]
    prompts = [shared + p for p in random_prompts([3, 6, 1, 9, 4], seed=10)]
    results = engine.generate(prompts, GREEDY)
    assert engine.stats().num_preemptions > 0
    for prompt, [result] in zip(prompts, results, strict=True):
        assert result.token_ids == hf_greedy("llama", prompt, 16)


def test_n_choices_share_the_prompt_blocks_computed_once(model_dirs: dict[str, Path]) -> None:
    prompt = random_prompts([40], seed=12)[0]
    params = SamplingParams(max_tokens=8, temperature=1.0, n=4, seed=3, ignore_eos=True)
    shared = make_engine(model_dirs["llama"], block_size=8)
    [with_sharing] = shared.generate([prompt], params)
    # Choices 1-3 wait for choice 0 to cache the prompt, then reuse its 4 full blocks each.
    assert shared.stats().prefix_cache_hit_blocks == 3 * 4
    [without] = make_engine(model_dirs["llama"], block_size=8, enable_prefix_caching=False).generate(
        [prompt], params
    )
    assert [c.token_ids for c in with_sharing] == [c.token_ids for c in without]
