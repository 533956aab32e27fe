"""LoRA adapters served by the engine on their base (engine/lora.py): the same greedy tokens as the
adapter merged into the weights and run by transformers; one step batching several adapters and the
base gives each request what it gets alone; LRU eviction at `max_loras`; no prefix-cache sharing
across adapters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from openmaas.engine import LLMEngine, SamplingParams
from openmaas.engine.lora import LoraRequest
from openmaas.engine.testing import build_tiny_adapter, merge_adapter
from openmaas.errors import InvalidRequest
from tests.integration.engine.conftest import ARCHS, make_engine, random_prompts

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models step in well under a millisecond of math: with the suite's processes sharing two
    cores, a second intra-op thread only spins (measured 30x slower steps under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adapters(
    model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[LoraRequest]]:
    """Four random adapters per architecture; the fourth adapts attention only, with another rank."""
    root = tmp_path_factory.mktemp("adapters")
    made: dict[str, list[LoraRequest]] = {}
    for arch, folder in model_dirs.items():
        made[arch] = [
            LoraRequest(f"{arch}-a{i}", build_tiny_adapter(root / f"{arch}-{i}", folder, seed=10 + i))
            for i in range(3)
        ]
        attention = ("q_proj", "v_proj", "o_proj")
        path = build_tiny_adapter(root / f"{arch}-3", folder, rank=2, alpha=4, targets=attention, seed=20)
        made[arch].append(LoraRequest(f"{arch}-a3", path))
    return made


@pytest.fixture(scope="module")
def engines(model_dirs: dict[str, Path]) -> dict[str, LLMEngine]:
    return {arch: make_engine(folder, max_loras=4) for arch, folder in model_dirs.items()}


def _tokens(engine: LLMEngine, prompts: list[list[int]], loras: list[LoraRequest | None]) -> list[list[int]]:
    results = engine.generate(prompts, GREEDY, loras)
    return [r[0].token_ids for r in results]


def _merged_greedy(
    model_dir: Path, adapter: LoraRequest, prompts: list[list[int]], n: int
) -> list[list[int]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    merge_adapter(model, adapter.path)
    answers = []
    with torch.inference_mode():
        for prompt in prompts:
            out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=2)
            answers.append(out[0, len(prompt) :].tolist())
    return answers


@pytest.mark.parametrize("arch", ARCHS)
def test_an_adapter_gives_the_tokens_of_its_merged_weights(
    arch: str,
    model_dirs: dict[str, Path],
    engines: dict[str, LLMEngine],
    adapters: dict[str, list[LoraRequest]],
    hf_greedy: Callable[[str, list[int], int], list[int]],
) -> None:
    prompts = random_prompts([7, 21], seed=3)
    engine = engines[arch]
    for adapter in (adapters[arch][0], adapters[arch][3]):
        merged = _merged_greedy(model_dirs[arch], adapter, prompts, 12)
        assert _tokens(engine, prompts, [adapter, adapter]) == merged
        # The adapter changes the output: the base alone answers otherwise.
        assert merged != [hf_greedy(arch, p, 12) for p in prompts]


@pytest.mark.parametrize("arch", ARCHS)
def test_one_batch_of_three_adapters_and_the_base_gives_each_its_own_tokens(
    arch: str, engines: dict[str, LLMEngine], adapters: dict[str, list[LoraRequest]],
) -> None:  # fmt: skip
    engine = engines[arch]
    prompts = random_prompts([5, 9, 17, 3, 12, 30, 8, 1], seed=4)
    loras: list[LoraRequest | None] = [*adapters[arch][:3], None] * 2
    alone = [_tokens(engine, [p], [lora])[0] for p, lora in zip(prompts, loras, strict=True)]
    assert len({tuple(t) for t in alone}) == len(alone)  # every adapter answers differently
    assert _tokens(engine, prompts, loras) == alone  # prefill and decode steps mixing them


def test_adapters_are_evicted_least_recently_used_and_stay_correct_after_reloading(
    model_dirs: dict[str, Path], adapters: dict[str, list[LoraRequest]],
) -> None:  # fmt: skip
    engine = make_engine(model_dirs["llama"], max_loras=2)
    slots = engine.runner.adapters
    assert slots is not None
    first, second, third, _ = adapters["llama"]
    prompt = random_prompts([10], seed=5)
    before = _tokens(engine, prompt, [first])
    _tokens(engine, prompt, [second])
    assert slots.resident() == [first.name, second.name]
    _tokens(engine, prompt, [third])  # the least recently used (first) leaves
    assert slots.resident() == [second.name, third.name]
    loads = slots.loads
    assert _tokens(engine, prompt, [first]) == before  # loaded again, into second's old slot
    assert slots.resident() == [third.name, first.name] and slots.loads == loads + 1
    # Three adapters at once on two slots: the third waits for a slot, and every answer is right.
    prompts = random_prompts([6, 6, 6], seed=6)
    together = _tokens(engine, prompts, [first, second, third])
    assert together == [
        _tokens(engine, [p], [a])[0] for p, a in zip(prompts, [first, second, third], strict=True)
    ]


def test_a_larger_rank_widens_the_slots_and_keeps_the_smaller_adapter_right(
    model_dirs: dict[str, Path], adapters: dict[str, list[LoraRequest]], engines: dict[str, LLMEngine]
) -> None:
    engine = make_engine(model_dirs["llama"], max_loras=2)
    rank4, rank2 = adapters["llama"][0], adapters["llama"][3]
    prompts = random_prompts([9, 4], seed=8)
    before = _tokens(engine, prompts, [rank2, rank2])  # the stacks are made at rank 2
    assert _tokens(engine, prompts, [rank4, rank2]) == [
        _tokens(engines["llama"], [prompts[0]], [rank4])[0],
        before[1],
    ]


def test_the_prefix_cache_is_not_shared_across_adapters(
    model_dirs: dict[str, Path], adapters: dict[str, list[LoraRequest]]
) -> None:
    engine = make_engine(model_dirs["qwen2"], max_loras=2)
    first, second = adapters["qwen2"][:2]
    prompt = random_prompts([40], seed=7)  # two full blocks of 16
    bm = engine.block_manager
    on_first = _tokens(engine, prompt, [first])
    hits = bm.prefix_hits
    assert _tokens(engine, prompt, [second]) == _tokens(make_engine(model_dirs["qwen2"]), prompt, [second])
    assert bm.prefix_hits == hits  # nothing reused from the first adapter's blocks
    _tokens(engine, prompt, [None])
    assert bm.prefix_hits == hits  # nor by the base
    assert _tokens(engine, prompt, [first]) == on_first
    assert bm.prefix_hits == hits + 2  # the same adapter reuses its own


def test_an_adapter_that_does_not_fit_is_refused_naming_the_model(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    engine = make_engine(model_dirs["llama"], max_loras=1, max_lora_rank=2)
    too_big = LoraRequest("big", build_tiny_adapter(tmp_path / "big", model_dirs["llama"], rank=4))
    with pytest.raises(InvalidRequest, match="max_lora_rank") as refused:
        engine.add_request("r", [5, 6], GREEDY, too_big)
    assert refused.value.param == "model"
    without = make_engine(model_dirs["llama"], max_loras=0)
    with pytest.raises(InvalidRequest, match="max_loras"):
        without.add_request("r", [5, 6], GREEDY, too_big)
