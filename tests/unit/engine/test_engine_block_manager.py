"""BlockManager: allocation, prefix reuse by chained hash, ref counts, freeing and eviction order."""

from __future__ import annotations

from openmaas.engine.block_manager import BlockManager
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.sequence import Sequence


def _seq(tokens: list[int]) -> Sequence:
    return Sequence("r", tokens, SamplingParams(), max_tokens=8)


def _compute(bm: BlockManager, seq: Sequence) -> None:
    """Pretend the model ran over the whole sequence."""
    bm.allocate(seq, [], seq.num_tokens)
    seq.num_computed_tokens = seq.num_tokens
    bm.cache_full_blocks(seq)


def test_allocate_and_free_return_every_block() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = _seq(list(range(10)))
    assert bm.can_allocate(seq, [], 10)
    bm.allocate(seq, [], 10)
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 5
    bm.allocate(seq, [], 13)  # grows by one block only when needed
    assert len(seq.block_table) == 4
    bm.free(seq)
    assert bm.num_free_blocks == 8 and seq.block_table == []


def test_shared_prefix_reuses_full_blocks_with_ref_counts() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    a = _seq(list(range(10)))
    _compute(bm, a)
    b = _seq([*range(8), 99, 98, 97])
    cached = bm.find_cached_prefix(b)
    assert cached == a.block_table[:2]
    bm.allocate(b, cached, b.num_tokens)
    assert b.num_computed_tokens == 8
    assert bm.blocks[cached[0]].ref_count == 2
    bm.free(a)
    assert bm.blocks[cached[0]].ref_count == 1  # still held by b
    bm.free(b)
    assert bm.num_free_blocks == 8


def test_a_different_earlier_block_breaks_the_chain() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    _compute(bm, _seq(list(range(12))))
    # Same second block, different first block: the chained hash must not match.
    assert bm.find_cached_prefix(_seq([50, 51, 52, 53, 4, 5, 6, 7, 8])) == []


def test_a_fully_cached_prompt_still_leaves_its_last_token_to_compute() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    _compute(bm, _seq(list(range(8))))
    assert len(bm.find_cached_prefix(_seq(list(range(8))))) == 1


def test_freed_blocks_stay_cached_until_reused_then_evicted_oldest_first() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a = _seq([1, 2, 3, 4, 5])
    _compute(bm, a)
    bm.free(a)
    assert len(bm.find_cached_prefix(_seq([1, 2, 3, 4, 9]))) == 2
    # Taking three blocks evicts the never-hashed tail and then the later-freed hashed block first.
    filler = _seq([7] * 6)
    bm.allocate(filler, [], 6)
    assert len(bm.find_cached_prefix(_seq([1, 2, 3, 4, 9]))) == 1


def test_caching_disabled_finds_nothing() -> None:
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    _compute(bm, _seq(list(range(12))))
    assert bm.find_cached_prefix(_seq(list(range(12)))) == []
