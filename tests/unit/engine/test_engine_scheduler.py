"""Scheduler decisions: token budget, chunked prefill, max running sequences, preemption."""

from __future__ import annotations

import pytest

from openmaas.engine.block_manager import BlockManager
from openmaas.engine.config import EngineConfig
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.scheduler import Scheduler, SchedulerOutput
from openmaas.engine.sequence import FinishReason, Sequence, SequenceStatus


def _scheduler(num_blocks: int = 64, block_size: int = 4, **options: object) -> Scheduler:
    config = EngineConfig(block_size=block_size, num_blocks=num_blocks, **options)  # type: ignore[arg-type]
    return Scheduler(config, BlockManager(num_blocks, block_size, config.enable_prefix_caching))


def _add(s: Scheduler, n_tokens: int, start: int = 1) -> Sequence:
    seq = Sequence("r", list(range(start, start + n_tokens)), SamplingParams(), max_tokens=100)
    s.add(seq)
    return seq


def _run(s: Scheduler, out: SchedulerOutput, token: int = 7) -> None:
    """What the engine does after a step: advance progress, append a token where one was sampled."""
    for item in out.scheduled:
        samples = item.samples
        item.seq.num_computed_tokens += item.num_tokens
        s.block_manager.cache_full_blocks(item.seq)
        if samples:
            item.seq.append_token(token)


def test_budget_chunks_the_last_prefill_and_continues_it_next_step() -> None:
    s = _scheduler(max_num_batched_tokens=10)
    a, b = _add(s, 6), _add(s, 9, start=100)
    out = s.schedule()
    assert [(i.seq, i.num_tokens) for i in out.scheduled] == [(a, 6), (b, 4)]
    assert not out.scheduled[1].samples
    _run(s, out)
    out = s.schedule()
    # a decodes one token, b gets the rest of its prompt.
    assert [(i.seq, i.num_tokens) for i in out.scheduled] == [(a, 1), (b, 5)]
    assert out.num_tokens == 6


def test_without_chunking_a_prompt_waits_for_a_budget_that_fits_it() -> None:
    s = _scheduler(max_num_batched_tokens=10, enable_chunked_prefill=False)
    _add(s, 6)
    _add(s, 9, start=100)
    out = s.schedule()
    assert [i.num_tokens for i in out.scheduled] == [6]
    assert len(s.waiting) == 1


def test_max_num_seqs_caps_running_sequences() -> None:
    s = _scheduler(max_num_seqs=2)
    for i in range(4):
        _add(s, 3, start=10 * i + 1)
    out = s.schedule()
    assert len(out.scheduled) == 2 and len(s.running) == 2 and len(s.waiting) == 2


def test_out_of_blocks_preempts_the_newest_running_sequence() -> None:
    s = _scheduler(num_blocks=4, block_size=4)
    a, b = _add(s, 8), _add(s, 8, start=100)
    out = s.schedule()
    assert len(out.scheduled) == 2 and s.block_manager.num_free_blocks == 0
    _run(s, out)  # both now hold 9 tokens and need a third block each
    out = s.schedule()
    assert out.preempted == [b]
    assert [i.seq for i in out.scheduled] == [a]
    assert b.status is SequenceStatus.WAITING and b.block_table == [] and b.num_computed_tokens == 0
    assert s.waiting[0] is b


def test_finish_frees_blocks_of_running_and_waiting_sequences() -> None:
    from openmaas.engine.sequence import FinishReason

    s = _scheduler(max_num_seqs=1)
    a, b = _add(s, 5), _add(s, 5, start=50)
    s.schedule()
    s.finish(a, FinishReason.ABORT)
    s.finish(b, FinishReason.ABORT)
    assert not s.has_work and s.block_manager.num_free_blocks == 64


def test_cpu_and_cuda_default_step_budgets() -> None:
    assert EngineConfig().step_token_budget == 256  # small chunks: a prefill stalls the others less
    assert EngineConfig(device="cuda").step_token_budget == 2048
    assert EngineConfig(max_num_batched_tokens=40).step_token_budget == 40
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        EngineConfig(max_num_batched_tokens=0)


def test_guesses_get_rows_within_the_budget_and_never_cost_a_preemption() -> None:
    s = _scheduler(num_blocks=3, block_size=4, max_num_batched_tokens=5)
    a, b = _add(s, 3), _add(s, 3, start=50)
    _run(s, s.schedule())  # both prefilled: 4 tokens each, one block each, one block free
    a.draft_token_ids = [9, 9, 9, 9, 9, 9]
    out = s.schedule()
    # a's guesses would take the last free block, which b's next token needs: a decodes without them.
    assert [(i.seq, i.num_tokens, i.draft) for i in out.scheduled] == [(a, 1, ()), (b, 1, ())]
    assert not out.preempted
    _run(s, out)
    s.finish(b, FinishReason.STOP)  # now the blocks are a's alone; the step budget caps its guesses
    out = s.schedule()
    assert [(i.seq, i.num_tokens, i.draft) for i in out.scheduled] == [(a, 5, (9, 9, 9, 9))]
    assert out.scheduled[0].samples and len(a.block_table) == 3


def _line(s: Scheduler, n_tokens: int, start: int) -> Sequence:
    """A batch line: priority 1, behind live requests."""
    seq = Sequence("line", list(range(start, start + n_tokens)), SamplingParams(), 100, priority=1)
    s.add(seq)
    return seq


def test_live_requests_wait_ahead_of_batch_lines_and_a_preempted_line_behind_them() -> None:
    s = _scheduler(num_blocks=4, block_size=4)
    a, b = _line(s, 8, 1), _line(s, 8, 100)
    out = s.schedule()
    assert [i.seq for i in out.scheduled] == [a, b]
    c = _line(s, 3, 200)
    live = _add(s, 3, start=300)
    late_live = _add(s, 3, start=400)
    assert list(s.waiting) == [live, late_live, c]  # live ones in arrival order, ahead of the line
    _run(s, out)  # both lines need a third block: the newest is preempted, to its place among lines
    out = s.schedule()
    assert out.preempted == [b] and list(s.waiting) == [live, late_live, b, c]
    s.finish(a, FinishReason.STOP)  # four blocks free: the live ones first (b needs three more)
    out = s.schedule()
    assert [i.seq for i in out.scheduled] == [live, late_live] and list(s.waiting) == [b, c]
