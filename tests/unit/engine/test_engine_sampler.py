"""Sampler: greedy, penalties, seeded draws and logprobs on hand-made logits."""

from __future__ import annotations

import torch

from openmaas.engine.sampler import Sampler
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.sequence import Sequence


def _seq(params: SamplingParams, output: list[int] = (), seed: int | None = None) -> Sequence:  # type: ignore[assignment]
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    seq = Sequence("r", [1, 2], params, max_tokens=10, generator=gen)
    for t in output:
        seq.append_token(t)
    return seq


def test_greedy_takes_argmax_and_penalties_push_repeats_down() -> None:
    logits = torch.tensor([[0.0, 3.0, 2.5, 1.0], [0.0, 3.0, 2.5, 1.0]])
    plain = _seq(SamplingParams(temperature=0.0), output=[1, 1])
    penalised = _seq(SamplingParams(temperature=0.0, frequency_penalty=0.5), output=[1, 1])
    out = Sampler()(logits, [plain, penalised])
    assert [o.token_id for o in out] == [1, 2]  # 3.0 - 2*0.5 = 2.0 < 2.5
    presence = _seq(SamplingParams(temperature=0.0, presence_penalty=0.6), output=[1])
    assert Sampler()(logits[:1], [presence])[0].token_id == 2
    assert logits[0, 1] == 3.0  # the caller's logits are untouched


def test_seeded_draws_repeat_and_top_k_limits_candidates() -> None:
    logits = torch.zeros(1, 50)
    params = SamplingParams(temperature=1.0, top_k=3)
    logits[0, [4, 9, 30]] = 5.0
    draws = [Sampler()(logits, [_seq(params, seed=s)])[0].token_id for s in range(20)]
    assert set(draws) <= {4, 9, 30} and len(set(draws)) > 1
    again = [Sampler()(logits, [_seq(params, seed=s)])[0].token_id for s in range(20)]
    assert draws == again


def test_logprobs_come_from_raw_logits() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    out = Sampler()(logits, [_seq(SamplingParams(temperature=0.0, logprobs=True, top_logprobs=2))])[0]
    expected = torch.log_softmax(logits[0], -1)
    assert out.token_id == 1
    assert abs(out.logprob - expected[1].item()) < 1e-6  # type: ignore[operator]
    assert [t for t, _ in out.top_logprobs] == [1, 0]


def test_a_mixed_batch_samples_each_row_as_it_would_alone() -> None:
    logits = torch.randn(4, 64, generator=torch.Generator().manual_seed(3))
    params = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.8, top_p=0.9),
        SamplingParams(temperature=0.0, logprobs=True, top_logprobs=3),
        SamplingParams(temperature=0.0, presence_penalty=1.5),
    ]
    together = Sampler()(logits, [_seq(p, output=[5, 6], seed=i) for i, p in enumerate(params)])
    alone = [Sampler()(logits[i : i + 1], [_seq(p, output=[5, 6], seed=i)])[0] for i, p in enumerate(params)]
    assert together == alone
    assert together[2].logprob is not None and len(together[2].top_logprobs) == 3


def test_greedy_over_half_precision_logits_picks_the_first_of_tied_maxima() -> None:
    logits = torch.zeros(3, 1000)
    logits[0, [7, 700]] = 2.0
    logits[1, [0, 999]] = 2.0
    logits[2, 500] = 1.0
    seqs = [_seq(SamplingParams(temperature=0.0)) for _ in range(3)]
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert [o.token_id for o in Sampler()(logits.to(dtype), seqs)] == [7, 0, 500]


def test_the_smallest_top_p_and_temperature_still_draw_a_token() -> None:
    """`top_p: 5e-324` (0 as a float32) dropped every token, and a temperature that small divided
    by zero: the draw saw NaN probabilities and the engine stopped for every caller (found by
    schemathesis). Both keep the most likely token."""
    logits = torch.tensor([[0.0, 3.0, 2.5, 1.0]])
    for params in (
        SamplingParams(temperature=1.0, top_p=5e-324),
        SamplingParams(temperature=5e-324),
        SamplingParams(temperature=1e-30, top_p=1e-30, top_k=2),
    ):
        assert Sampler()(logits, [_seq(params, seed=0)])[0].token_id == 1, params


def test_logit_bias_is_added_to_the_logits() -> None:
    logits = torch.tensor([[0.0, 3.0, 2.5, 1.0]])
    params = SamplingParams(temperature=0.0, logit_bias={3: 2.5, 1: -100})
    assert Sampler()(logits, [_seq(params)])[0].token_id == 3  # 1.0 + 2.5 beats 2.5; 1 is banned
    assert logits[0, 3] == 1.0  # on a copy


def test_min_p_drops_tokens_far_below_the_likeliest() -> None:
    logits = torch.tensor([[5.0, 4.9, 0.0, 0.0] + [0.0] * 60])
    params = SamplingParams(temperature=1.0, min_p=0.5)
    draws = {Sampler()(logits, [_seq(params, seed=s)])[0].token_id for s in range(40)}
    assert draws == {0, 1}
    plain = SamplingParams(temperature=1.0)
    loose = {Sampler()(logits, [_seq(plain, seed=s)])[0].token_id for s in range(40)}
    assert loose - {0, 1}


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits() -> None:
    sampler = Sampler()
    # Prompt [1, 2]; output [3]. Seen: 1, 2, 3.
    row = torch.tensor([1.0, 4.0, -1.0, 3.0, 2.5])
    sampler._apply_processors(row, _seq(SamplingParams(repetition_penalty=2.0), output=[3]))
    assert row.tolist() == [1.0, 2.0, -2.0, 1.5, 2.5]
    logits = torch.tensor([[0.0, 4.0, 0.0, 3.0, 2.1]])
    greedy = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    assert sampler(logits, [_seq(greedy, output=[3])])[0].token_id == 4  # 3.0 / 2 < 2.1


def test_min_tokens_holds_back_eos_and_stop_token_ids_until_reached() -> None:
    logits = torch.tensor([[0.0, 1.0, 9.0, 8.0, 0.5]])  # 2 is eos, 3 a stop token id
    sampler = Sampler(eos_token_ids=frozenset({2}))
    params = SamplingParams(temperature=0.0, min_tokens=2, stop_token_ids=[3])
    assert sampler(logits, [_seq(params, output=[4])])[0].token_id == 1
    assert sampler(logits, [_seq(params, output=[4, 4])])[0].token_id == 2
    ignoring = SamplingParams(temperature=0.0, min_tokens=2, ignore_eos=True)
    assert sampler(logits, [_seq(ignoring, output=[4])])[0].token_id == 2  # ignore_eos: eos is not held


def test_processors_leave_plain_rows_on_the_fast_path() -> None:
    assert not SamplingParams(temperature=0.0).has_processors
    for params in (
        SamplingParams(logit_bias={1: 1.0}),
        SamplingParams(min_p=0.1),
        SamplingParams(repetition_penalty=1.1),
        SamplingParams(min_tokens=1),
    ):
        assert params.has_processors
