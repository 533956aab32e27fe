"""n, seed, stop strings, stop tokens, max_tokens and logprobs as the OpenAI API documents them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openmaas.engine import SamplingParams
from openmaas.errors import InvalidRequest

from .conftest import make_engine, random_prompts


def test_n_choices_are_distinct_and_seeded_runs_repeat(model_dirs: dict[str, Path]) -> None:
    engine = make_engine(model_dirs["llama"])
    prompt, other = random_prompts([10, 30], seed=2)
    params = SamplingParams(max_tokens=16, temperature=1.5, n=3, seed=1234, ignore_eos=True)
    [choices] = engine.generate([prompt], params)
    assert [c.index for c in choices] == [0, 1, 2]
    assert all(len(c.token_ids) == 16 and c.finish_reason == "length" for c in choices)
    assert len({tuple(c.token_ids) for c in choices}) == 3
    # Same seed, different batch companions: the same tokens.
    again, _ = engine.generate([prompt, other], [params, SamplingParams(max_tokens=5, temperature=1.0)])
    assert [c.token_ids for c in again] == [c.token_ids for c in choices]
    [other_seed] = engine.generate([prompt], SamplingParams(max_tokens=16, temperature=1.5, seed=99))
    assert other_seed[0].token_ids != choices[0].token_ids


def test_top_k_1_is_greedy_and_top_p_keeps_output_in_nucleus(model_dirs: dict[str, Path]) -> None:
    engine = make_engine(model_dirs["llama"])
    prompt = random_prompts([12], seed=4)[0]
    [[greedy]] = engine.generate([prompt], SamplingParams(max_tokens=12, temperature=0.0))
    [[top1]] = engine.generate([prompt], SamplingParams(max_tokens=12, temperature=1.0, top_k=1, seed=3))
    assert top1.token_ids == greedy.token_ids
    # A nucleus this small holds only the most likely token.
    [[tiny_p]] = engine.generate([prompt], SamplingParams(max_tokens=12, temperature=1.0, top_p=1e-6, seed=3))
    assert tiny_p.token_ids == greedy.token_ids


def test_stop_string_cuts_text_before_it(model_dirs: dict[str, Path]) -> None:
    engine = make_engine(model_dirs["llama"])
    prompt = random_prompts([8], seed=21)[0]
    base = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    [[full]] = engine.generate([prompt], base)
    assert len(full.text) > 12
    stop = full.text[8:11]
    cut = full.text.find(stop)
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, stop=["never-there", stop])
    [[stopped]] = engine.generate([prompt], params)
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[:cut]
    assert stopped.token_ids == full.token_ids[: len(stopped.token_ids)]
    assert len(stopped.token_ids) < len(full.token_ids)


def test_streamed_deltas_add_up_and_never_show_the_stop_string(model_dirs: dict[str, Path]) -> None:
    engine = make_engine(model_dirs["qwen2"])
    prompt = random_prompts([8], seed=22)[0]
    [[full]] = engine.generate([prompt], SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True))
    stop = full.text[10:14]
    engine.add_request(
        "r", prompt, SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, stop=[stop])
    )
    deltas, last = [], None
    while engine.has_unfinished_requests:
        for out in engine.step():
            deltas.append(out.text_delta)
            assert stop not in "".join(deltas)
            last = out
    assert last is not None and last.finish_reason == "stop"
    assert "".join(deltas) == last.text == full.text[: full.text.find(stop)]


def test_eos_and_stop_token_ids_finish_with_stop(model_dirs: dict[str, Path]) -> None:
    engine = make_engine(model_dirs["llama"])
    prompt = random_prompts([6], seed=8)[0]
    [[full]] = engine.generate([prompt], SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True))
    target = full.token_ids[5]
    first = full.token_ids.index(target)
    [[stopped]] = engine.generate(
        [prompt], SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True, stop_token_ids=[target])
    )
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == full.token_ids[: first + 1]
    assert stopped.completion_tokens == first + 1


def test_logprobs_are_log_softmax_of_the_model_logits(model_dirs: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    engine = make_engine(model_dirs["qwen2"])
    prompt = random_prompts([9], seed=13)[0]
    params = SamplingParams(
        max_tokens=6, temperature=0.7, seed=5, logprobs=True, top_logprobs=4, ignore_eos=True
    )
    [[result]] = engine.generate([prompt], params)
    assert result.logprobs is not None and len(result.logprobs) == 6
    hf = AutoModelForCausalLM.from_pretrained(model_dirs["qwen2"], dtype=torch.float32)
    with torch.inference_mode():
        logits = hf(torch.tensor([prompt + result.token_ids])).logits[0]
    expected = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    for pos, entry in enumerate(result.logprobs):
        assert entry.token_id == result.token_ids[pos]
        assert entry.logprob == pytest.approx(expected[pos, entry.token_id].item(), abs=1e-4)
        assert len(entry.top_logprobs) == 4
        values = [v for _, v in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        top_ids = expected[pos].topk(4).indices.tolist()
        assert [t for t, _ in entry.top_logprobs] == top_ids
        assert values[0] == pytest.approx(expected[pos].max().item(), abs=1e-4)


def test_without_logprobs_outputs_carry_none(model_dirs: dict[str, Path]) -> None:
    engine = make_engine(model_dirs["llama"])
    engine.add_request("a", [5, 6, 7], SamplingParams(max_tokens=2, temperature=0.0))
    outputs = engine.step()
    assert outputs[0].logprobs is None and outputs[0].new_token_ids


def test_prompt_longer_than_context_is_rejected(model_dirs: dict[str, Path]) -> None:
    engine = make_engine(model_dirs["llama"], max_model_len=64)
    with pytest.raises(InvalidRequest) as err:
        engine.add_request("long", list(range(3, 70)), SamplingParams())
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(InvalidRequest) as err:
        engine.add_request("long2", list(range(3, 40)), SamplingParams(max_tokens=40))
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(InvalidRequest) as err:
        engine.add_request("bad", [1, 99999], SamplingParams())
    assert err.value.param == "prompt"
    # max_tokens None fills the context exactly.
    [[fill]] = engine.generate(
        [list(range(3, 40))], SamplingParams(max_tokens=None, temperature=0, ignore_eos=True)
    )
    assert fill.completion_tokens == 64 - 37 and fill.finish_reason == "length"


def test_without_chunked_prefill_a_sequence_must_fit_one_step(model_dirs: dict[str, Path]) -> None:
    engine = make_engine(model_dirs["llama"], enable_chunked_prefill=False, max_num_batched_tokens=32)
    with pytest.raises(InvalidRequest) as err:  # it could never be scheduled (or recomputed) in one step
        engine.add_request("big", list(range(3, 30)), SamplingParams(max_tokens=10))
    assert err.value.param == "max_tokens" and "step budget" in str(err.value)
    [[done]] = engine.generate([list(range(3, 20))], SamplingParams(max_tokens=10, ignore_eos=True))
    assert len(done.token_ids) == 10
