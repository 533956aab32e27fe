"""Sequence: the mutable state of one generated choice (prompt + output tokens, KV blocks, progress).

A request with `n > 1` owns `n` sequences that share the prompt. The scheduler moves sequences
between waiting and running; the block manager fills `block_table`; the engine appends tokens.
"""

from __future__ import annotations

import enum
import itertools

import torch

from openmaas.engine.guided import GrammarMatcher
from openmaas.engine.lora import LoraRequest
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.speculative import SpecState


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


_seq_ids = itertools.count()


class Sequence:
    """One choice of one request. `num_computed_tokens` tokens already have their KV in the cache."""

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        max_tokens: int,
        index: int = 0,
        generator: torch.Generator | None = None,
        arrival: float = 0.0,
        lora: LoraRequest | None = None,
        priority: int = 0,
    ) -> None:
        self.seq_id = next(_seq_ids)
        self.request_id = request_id
        self.index = index
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.max_tokens = max_tokens
        self.generator = generator
        self.arrival = arrival
        self.last_token_at = arrival  # when its latest output token came (for inter-token latency)
        self.priority = priority  # lower first: live requests 0, batch lines more (scheduler.add)
        self.status = SequenceStatus.WAITING
        self.finish_reason: FinishReason | None = None
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        # Hash of each full block of token_ids, chained to the previous one (for prefix caching).
        self.block_hashes: list[int] = []
        self.num_preemptions = 0
        # For choices 1..n-1 of a request: wait until choice 0 has cached the shared prompt's KV.
        self.prefix_leader: Sequence | None = None
        # Where this choice stands in its request's grammar (structured output), if it has one.
        self.matcher: GrammarMatcher | None = None
        # The LoRA adapter it runs with (None: the base), its slot while it holds one (-1: none), and
        # the root of its block hashes, so KV computed under one adapter is never reused by another.
        self.lora = lora
        self.lora_slot = -1
        self.hash_root: int | None = None if lora is None else hash(("lora", lora.name))
        # Speculative decoding (engine/speculative.py), None where this choice does not speculate;
        # this step's guessed next tokens, verified by the step and never part of token_ids.
        self.spec: SpecState | None = None
        self.draft_token_ids: list[int] = []

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)

    def block_tokens(self, index: int, block_size: int) -> list[int]:
        return self.token_ids[index * block_size : (index + 1) * block_size]

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.seq_id}, request={self.request_id!r}, tokens={self.num_tokens}, "
            f"computed={self.num_computed_tokens}, status={self.status.value})"
        )
