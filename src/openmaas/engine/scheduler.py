"""Scheduler: decides, each step, which sequences run and how many of their tokens to compute.

Continuous batching in the vLLM v1 style: one token budget per step covers decode tokens (one per
running sequence) and prefill chunks alike. Running sequences go first, oldest first; waiting ones
are admitted while the budget, `max_num_seqs` and free blocks allow, the last one possibly with only
a chunk of its prompt. The waiting queue is kept in priority order (lower first, arrival order
within one): a live request goes ahead of the batch lines still waiting, never of a running one, and
batch lines are admitted whenever no live request waits. When a running sequence needs a block and
none is free, the newest running sequence is preempted: its blocks are freed and it goes back to
the front of the queue (of its priority), to be recomputed later (prefix caching usually makes
that cheap). Choices 1..n-1 of a request wait until choice 0 has computed the shared prompt, then
reuse its cached blocks. The scheduler only decides; it never runs the model or samples.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from openmaas.engine.block_manager import BlockManager
from openmaas.engine.config import EngineConfig
from openmaas.engine.lora import AdapterSlots
from openmaas.engine.sequence import FinishReason, Sequence, SequenceStatus


@dataclass
class ScheduledSequence:
    seq: Sequence
    num_tokens: int  # tokens to compute this step, starting at seq.num_computed_tokens
    # Guessed next tokens (speculative decoding) computed after the sequence's last token: they are
    # the last len(draft) of num_tokens, and each of the step's 1 + len(draft) rows samples.
    draft: tuple[int, ...] = ()

    @property
    def samples(self) -> bool:
        """Whether this step reaches the end of the sequence, so a next token is sampled."""
        return self.seq.num_computed_tokens + self.num_tokens - len(self.draft) == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)


class Scheduler:
    def __init__(
        self, config: EngineConfig, block_manager: BlockManager, adapters: AdapterSlots | None = None
    ) -> None:
        self.config = config
        self.block_manager = block_manager
        self.adapters = adapters
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        if self.waiting and self.waiting[-1].priority > seq.priority:
            self.waiting.insert(self._first_waiting_after(seq.priority), seq)
        else:  # the common case: one comparison
            self.waiting.append(seq)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.step_token_budget
        chunked = self.config.enable_chunked_prefill
        bm = self.block_manager

        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if n < seq.num_tokens - seq.num_computed_tokens and not chunked:
                i += 1
                continue
            target = seq.num_computed_tokens + n
            while not bm.can_allocate(seq, [], target):
                victim = self.running[-1]
                self._preempt(victim, out)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                break
            item = ScheduledSequence(seq, n)
            if seq.draft_token_ids and n == 1:
                self._add_draft(item, budget, reserve=len(self.running) - i - 1)
            bm.allocate(seq, [], seq.num_computed_tokens + item.num_tokens)
            out.scheduled.append(item)
            budget -= item.num_tokens
            i += 1

        for seq in list(self.waiting) if not out.preempted else []:
            if budget <= 0 or len(self.running) >= self.config.max_num_seqs:
                break
            if self._leader_still_prefilling(seq):
                continue
            cached = bm.find_cached_prefix(seq)
            remaining = seq.num_tokens - len(cached) * bm.block_size
            n = min(remaining, budget)
            if n < remaining and not chunked:
                break
            target = len(cached) * bm.block_size + n
            if not bm.can_allocate(seq, cached, target):
                break
            if seq.lora is not None and seq.lora_slot < 0 and not self._hold_adapter(seq):
                continue  # every adapter slot is held by running sequences: wait for one
            bm.allocate(seq, cached, target)
            self.waiting.remove(seq)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append(ScheduledSequence(seq, n))
            budget -= n
        return out

    def _add_draft(self, item: ScheduledSequence, budget: int, reserve: int) -> None:
        """Give a decoding sequence's guesses their rows, as many as the step's token budget and the
        free blocks allow while `reserve` blocks stay free for the running sequences after it: a guess
        is never worth a preemption."""
        seq = item.seq
        bm = self.block_manager
        draft = seq.draft_token_ids[: budget - 1]
        new_blocks = bm.blocks_for(seq.num_tokens + len(draft)) - len(seq.block_table)
        if draft and new_blocks + reserve <= bm.num_free_blocks:
            item.draft = tuple(draft)
            item.num_tokens += len(draft)

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """Mark `seq` finished, drop it from the queues and free its blocks at once."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.block_manager.free(seq)
        if seq.lora_slot >= 0 and self.adapters is not None:
            self.adapters.release(seq.lora_slot)
            seq.lora_slot = -1

    def _hold_adapter(self, seq: Sequence) -> bool:
        """Give `seq` a slot holding its adapter (kept until it finishes, also while preempted)."""
        assert seq.lora is not None and self.adapters is not None
        slot = self.adapters.acquire(seq.lora)
        if slot is None:
            return False
        seq.lora_slot = slot
        return True

    @staticmethod
    def _leader_still_prefilling(seq: Sequence) -> bool:
        leader = seq.prefix_leader
        return (
            leader is not None
            and leader.status is not SequenceStatus.FINISHED
            and leader.num_computed_tokens < leader.num_prompt_tokens
        )

    def _first_waiting_after(self, priority: int) -> int:
        return next((i for i, seq in enumerate(self.waiting) if seq.priority > priority), len(self.waiting))

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        if self.waiting and self.waiting[0].priority < seq.priority:  # first of its priority
            self.waiting.insert(self._first_waiting_after(seq.priority - 1), seq)
        else:
            self.waiting.appendleft(seq)
        out.preempted.append(seq)
