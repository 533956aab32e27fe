"""Speculative decoding (engine/speculative.py) changes how fast tokens come, never which: greedy
output with speculation on equals off — alone, in a mixed batch, cut by max_tokens, stop token ids or
stop strings inside an accepted run, streamed — seeded sampling gives the same tokens, penalties,
logprobs and LoRA rows keep working, and the KV cache holds only committed tokens afterwards.

The models are tiny random Llama and Qwen2 with small weights, which fall into loops within a few
dozen tokens, so their own output matches earlier n-grams and guesses get accepted (each test checks
that some were, so it can fail)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from openmaas.engine import LLMEngine, SamplingParams
from openmaas.engine.lora import LoraRequest
from openmaas.engine.outputs import RequestOutput
from openmaas.engine.testing import build_tiny_adapter, build_tiny_model
from tests.integration.engine.conftest import ARCHS, make_engine, random_prompts

GREEDY = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models: a second intra-op thread only spins on the suite's two shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loopy_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loopy-models")
    return {
        arch: build_tiny_model(root / arch, arch, initializer_range=0.05, seed=3, tie_word_embeddings=False)
        for arch in ARCHS
    }


@pytest.fixture(scope="module")
def engines(loopy_dirs: dict[str, Path]) -> dict[str, tuple[LLMEngine, LLMEngine]]:
    """(plain, speculative) per architecture; small blocks, so runs cross block boundaries often."""
    return {
        arch: (
            make_engine(folder, block_size=4, max_loras=2),
            make_engine(folder, block_size=4, max_loras=2, speculative_tokens=4),
        )
        for arch, folder in loopy_dirs.items()
    }


def _prompts() -> list[list[int]]:
    prompts = random_prompts([5, 23, 40], seed=7)
    prompts.append((prompts[0] * 5)[:24])  # repeated spans in the prompt itself
    return prompts


def _run(engine: LLMEngine, prompt: list[int], params: SamplingParams) -> list[RequestOutput]:
    """Every output of one request, step by step (what a stream carries)."""
    request_id = f"r{id(prompt)}-{id(params)}-{engine.stats().generation_tokens}"
    engine.add_request(request_id, prompt, params)
    outs: list[RequestOutput] = []
    while engine.has_unfinished_requests:
        outs += [out for out in engine.step() if out.request_id == request_id]
    return outs


def _tokens(outs: list[RequestOutput]) -> list[int]:
    return [t for out in outs for t in out.new_token_ids]


def _runs(outs: list[RequestOutput], at_least: int = 3) -> list[int]:
    """Output positions where a step produced `at_least` tokens (an accepted run) begins."""
    starts, done = [], 0
    for out in outs:
        if len(out.new_token_ids) >= at_least:
            starts.append(done)
        done += len(out.new_token_ids)
    return starts


def _accepted(engine: LLMEngine) -> int:
    return engine.stats().spec_accepted_tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_tokens_equal_without_speculation_alone_and_in_a_mixed_batch(
    engines: dict[str, tuple[LLMEngine, LLMEngine]], arch: str
) -> None:
    plain, spec = engines[arch]
    accepted = _accepted(spec)
    prompts = _prompts()
    for prompt in prompts:
        alone = _run(spec, prompt, GREEDY)
        assert _tokens(alone) == _tokens(_run(plain, prompt, GREEDY))
    assert _accepted(spec) > accepted
    # All at once, beside requests that take the sampler's full path (penalties, logprobs) and a
    # seeded sampled one, each with guesses of its own in the same steps.
    mixed = [
        GREEDY,
        SamplingParams(max_tokens=40, temperature=0.0, frequency_penalty=0.5, ignore_eos=True),
        SamplingParams(max_tokens=40, temperature=0.0, logprobs=True, top_logprobs=2, ignore_eos=True),
        SamplingParams(max_tokens=40, temperature=0.8, top_p=0.9, seed=11, ignore_eos=True),
    ]
    accepted = _accepted(spec)
    want = plain.generate(prompts, mixed)
    got = spec.generate(prompts, mixed)
    assert _accepted(spec) > accepted
    for w, g in zip(want, got, strict=True):
        assert g[0].token_ids == w[0].token_ids
        assert g[0].text == w[0].text
    assert got[2][0].logprobs is not None and want[2][0].logprobs is not None
    for w_lp, g_lp in zip(want[2][0].logprobs, got[2][0].logprobs, strict=True):
        assert g_lp.token_id == w_lp.token_id
        assert g_lp.logprob == pytest.approx(w_lp.logprob, abs=1e-4)
        assert [t for t, _ in g_lp.top_logprobs] == [t for t, _ in w_lp.top_logprobs]


@pytest.mark.parametrize("arch", ARCHS)
def test_max_tokens_and_stop_token_ids_inside_an_accepted_run(
    engines: dict[str, tuple[LLMEngine, LLMEngine]], arch: str
) -> None:
    plain, spec = engines[arch]
    prompt = _prompts()[1]
    outs = _run(spec, prompt, GREEDY)
    full = _tokens(outs)
    runs = _runs(outs)
    assert runs, "no step accepted two guesses: nothing to cut inside"
    for start in runs[:3]:
        cut = SamplingParams(max_tokens=start + 2, temperature=0.0, ignore_eos=True)
        got = _run(spec, prompt, cut)
        assert _tokens(got) == full[: start + 2]
        assert got[-1].finish_reason == "length"
        # The second token of the run ends the output (or an earlier occurrence of it does).
        stop_id = full[start + 1]
        params = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True, stop_token_ids=[stop_id])
        got = _run(spec, prompt, params)
        assert _tokens(got) == full[: full.index(stop_id) + 1] == _tokens(_run(plain, prompt, params))
        assert got[-1].finish_reason == "stop"


@pytest.mark.parametrize("arch", ARCHS)
def test_stop_strings_and_streamed_text_as_without_speculation(
    engines: dict[str, tuple[LLMEngine, LLMEngine]], arch: str
) -> None:
    plain, spec = engines[arch]
    assert spec.tokenizer is not None
    checked = 0
    for prompt in _prompts():
        outs = _run(spec, prompt, GREEDY)
        want = _run(plain, prompt, GREEDY)
        # Streamed: several tokens per step reach the text in order, and the deltas add up.
        assert "".join(out.text_delta for out in outs) == outs[-1].text == want[-1].text
        for start in _runs(outs)[:2]:
            text = spec.tokenizer.decode(_tokens(outs)[: start + 2])
            stop = text.rstrip()[-2:]
            if len(stop.strip()) < 2 or "\ufffd" in stop:  # whole characters only
                continue
            checked += 1
            params = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True, stop=[stop])
            got, ref = _run(spec, prompt, params), _run(plain, prompt, params)
            assert _tokens(got) == _tokens(ref)
            assert got[-1].text == ref[-1].text and stop not in got[-1].text
            assert "".join(out.text_delta for out in got) == got[-1].text
            assert got[-1].finish_reason == ref[-1].finish_reason == "stop"
    assert checked


@pytest.mark.parametrize("arch", ARCHS)
def test_seeded_sampling_gives_the_same_tokens_with_speculation_on_or_off(
    engines: dict[str, tuple[LLMEngine, LLMEngine]], arch: str
) -> None:
    """Each emitted token is drawn as plain decoding draws it (same generator, same order), so the
    output distribution is unchanged and a seed gives the same tokens either way."""
    plain, spec = engines[arch]
    accepted = _accepted(spec)
    # A low temperature, so the tiny models still loop and guesses get accepted; prompts no earlier
    # test cached: a prefill that reuses cached blocks rounds differently from one that does not, and
    # a draw near a boundary of the cumulative probabilities may follow the rounding.
    params = SamplingParams(max_tokens=48, temperature=0.1, top_k=20, seed=5, n=2, ignore_eos=True)
    prompts = random_prompts([9, 30], seed=9)
    first = spec.generate(prompts, params)
    again = spec.generate(prompts, params)
    off = plain.generate(prompts, params)
    assert _accepted(spec) > accepted
    for a, b, c in zip(first, again, off, strict=True):
        assert [r.token_ids for r in a] == [r.token_ids for r in b] == [r.token_ids for r in c]


@pytest.mark.parametrize("arch", ARCHS)
def test_after_rejections_the_cache_holds_only_committed_tokens(
    engines: dict[str, tuple[LLMEngine, LLMEngine]], arch: str
) -> None:
    plain, spec = engines[arch]
    stats = spec.stats()
    prompt = _prompts()[2]
    first = _tokens(_run(spec, prompt, GREEDY))
    after = spec.stats()
    rejected = (after.spec_draft_tokens - stats.spec_draft_tokens) - (
        after.spec_accepted_tokens - stats.spec_accepted_tokens
    )
    assert rejected > 0 and after.spec_accepted_tokens > stats.spec_accepted_tokens
    assert after.num_free_blocks == after.num_blocks  # nothing held once the request finished
    # A later request whose prompt is that whole conversation reuses the blocks written while guessing.
    longer = prompt + first
    got = _tokens(_run(spec, longer, GREEDY))
    assert spec.stats().prefix_cache_hit_blocks >= after.prefix_cache_hit_blocks + len(longer) // 4 - 1
    assert got == _tokens(_run(plain, longer, GREEDY))


def test_lora_rows_speculate_with_their_adapter(
    engines: dict[str, tuple[LLMEngine, LLMEngine]], loopy_dirs: dict[str, Path], tmp_path: Path
) -> None:
    plain, spec = engines["llama"]
    lora = LoraRequest("spec-a", build_tiny_adapter(tmp_path / "a", loopy_dirs["llama"], std=0.05, seed=2))
    prompts = _prompts()
    accepted = _accepted(spec)
    want = plain.generate(prompts, GREEDY, [lora, None, lora, None])
    got = spec.generate(prompts, GREEDY, [lora, None, lora, None])
    assert [r[0].token_ids for r in got] == [r[0].token_ids for r in want]
    assert _accepted(spec) > accepted
