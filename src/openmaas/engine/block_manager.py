"""BlockManager: hands out fixed-size KV-cache blocks to sequences and keeps the prefix cache.

A block holds the keys and values of `block_size` consecutive tokens. A full block whose KV has been
computed is registered under a hash chained over every token before it, so a later sequence with the
same prefix reuses it (ref count + 1) instead of recomputing. Freed blocks keep their hash until they
are handed out again, least recently freed first. Only full blocks are ever shared and a sequence only
writes into its own last, partial block, so shared blocks are never written (no copy-on-write needed).
This module only does bookkeeping; it never touches tensors.
"""

from __future__ import annotations

from collections import OrderedDict

from openmaas.engine.sequence import Sequence


class Block:
    __slots__ = ("block_hash", "block_id", "ref_count", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.block_hash: int | None = None
        self.token_ids: tuple[int, ...] = ()


def chain_hash(parent: int | None, token_ids: tuple[int, ...]) -> int:
    return hash((parent, token_ids))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Free blocks in eviction order (oldest first). Values unused; OrderedDict gives O(1) removal.
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[int, int] = {}  # block hash -> block id
        self.prefix_hits = 0  # blocks reused from the cache, for metrics and tests
        # Every lookup: full blocks looked up and found (the prefix-cache hit rate is their ratio).
        self.prefix_queried = 0
        self.prefix_found = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def find_cached_prefix(self, seq: Sequence) -> list[int]:
        """Ids of cached blocks that hold `seq`'s leading full blocks (at least one token stays uncached)."""
        if not self.enable_prefix_caching:
            return []
        hits: list[int] = []
        parent = seq.hash_root
        for i in range((seq.num_tokens - 1) // self.block_size):
            tokens = tuple(seq.block_tokens(i, self.block_size))
            h = chain_hash(parent, tokens)
            block_id = self._cached.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
            parent = h
        self.prefix_queried += (seq.num_tokens - 1) // self.block_size
        self.prefix_found += len(hits)
        return hits

    def can_allocate(self, seq: Sequence, cached: list[int], num_tokens: int) -> bool:
        """Whether `seq` can hold `num_tokens` tokens, reusing the `cached` prefix blocks."""
        reused_free = sum(1 for b in cached if self.blocks[b].ref_count == 0)
        new = self.blocks_for(num_tokens) - len(seq.block_table) - len(cached)
        return max(new, 0) + reused_free <= len(self._free)

    def allocate(self, seq: Sequence, cached: list[int], num_tokens: int) -> None:
        """Give `seq` the `cached` prefix blocks (if it has none yet) and enough new ones for `num_tokens`."""
        if cached:
            assert not seq.block_table, "a prefix is only reused by a sequence without blocks"
            for block_id in cached:
                block = self.blocks[block_id]
                if block.ref_count == 0:
                    del self._free[block_id]
                block.ref_count += 1
                seq.block_table.append(block_id)
                assert block.block_hash is not None
                seq.block_hashes.append(block.block_hash)
            seq.num_computed_tokens = len(cached) * self.block_size
            self.prefix_hits += len(cached)
        while len(seq.block_table) < self.blocks_for(num_tokens):
            seq.block_table.append(self._take_free_block())

    def free(self, seq: Sequence) -> None:
        # Tail blocks first, so the eviction order keeps shared prefixes longest.
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block_id] = None
        seq.block_table.clear()
        seq.block_hashes.clear()
        seq.num_computed_tokens = 0

    def truncate(self, seq: Sequence) -> None:
        """Hand back the blocks past `seq`'s computed tokens (after speculative decoding rejected
        guesses whose KV went there). They never held a cached block: only computed blocks are."""
        keep = self.blocks_for(seq.num_computed_tokens)
        while len(seq.block_table) > keep:
            block = self.blocks[seq.block_table.pop()]
            block.ref_count -= 1
            if block.ref_count == 0:  # first out again: it holds nothing worth keeping
                self._free[block.block_id] = None
                self._free.move_to_end(block.block_id, last=False)

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the blocks of `seq` that became full of computed KV since the last call."""
        if not self.enable_prefix_caching:
            return
        num_full = min(seq.num_computed_tokens // self.block_size, len(seq.block_table))
        for i in range(len(seq.block_hashes), num_full):
            tokens = tuple(seq.block_tokens(i, self.block_size))
            parent = seq.block_hashes[i - 1] if i else seq.hash_root
            h = chain_hash(parent, tokens)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if block.block_hash is None:
                block.block_hash, block.token_ids = h, tokens
                self._cached.setdefault(h, block.block_id)

    def _take_free_block(self) -> int:
        block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.block_hash is not None:
            if self._cached.get(block.block_hash) == block_id:
                del self._cached[block.block_hash]
            block.block_hash, block.token_ids = None, ()
        block.ref_count = 1
        return block_id
