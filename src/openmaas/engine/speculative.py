"""Speculative decoding by n-gram prompt lookup: guess a decoding sequence's next tokens from its own
context, so one forward of k+1 rows can commit several tokens at once.

At batch 1 a decode step reads every weight to compute one row; a few more rows cost little more (the
step is bandwidth-bound), so each guessed token the model agrees with is a token for nearly free. The
guesses come from the context itself: the latest earlier occurrence of the sequence's last n tokens
(n from `prompt_lookup_max` down to `prompt_lookup_min`) and the k tokens that followed it — what
vLLM calls "ngram" and llama.cpp "lookup decoding". It pays where answers copy their input (code
edits, quotes, extraction, summaries, repeated structure) and costs nothing where nothing matches.

This module only proposes and keeps the books (per-request acceptance, and when speculation stops
paying for a request); the scheduler gives the guesses their rows, the runner verifies them in the
same forward as the other sequences' decode rows, and the engine accepts the longest prefix the
model agrees with (`LLMEngine._verify`). It never touches tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openmaas.engine.sequence import Sequence

# When speculation pays for a request. Verifying d guessed tokens costs a step of d+1 rows instead of
# one; each row past the first costs about ROW_COST of a 1-row step (benchmarks/speculative.py on the
# Qwen2.5-0.5B-shaped model in fp32, 2 threads: 0.145 per row at 4 guesses, measured on a host at load
# average 15, so a rough figure), so a request gains while its acceptance (accepted / proposed) stays
# above it. Judged over windows of WINDOW proposed tokens; a request below it pauses for PAUSE steps,
# doubling each time up to MAX_PAUSE, and tries again (its output may start copying later).
ROW_COST = 0.15
WINDOW = 16
PAUSE = 8
MAX_PAUSE = 256
# Guessed rows only come nearly free while a step is bandwidth-bound: past this many rows in one step
# (decode rows plus guesses) a CPU step becomes compute-bound and guesses would slow everyone down.
MAX_STEP_ROWS = 16


class NgramIndex:
    """Where each n-gram (min_n <= n <= max_n) of a token list last occurred with a token after it.

    Updated incrementally as the list grows, so a lookup costs O(max_n - min_n) whatever the length.
    """

    def __init__(self, min_n: int, max_n: int) -> None:
        self.min_n, self.max_n = min_n, max_n
        self._next: dict[tuple[int, ...], int] = {}  # n-gram -> where the token after it sits
        self._indexed = 0  # n-grams ending before this position are in `_next`

    def propose(self, tokens: list[int], k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest matching suffix.

        Past the end of the context the match's own pattern is repeated (a suffix that recurs with
        period p continues with period p), so a short loop still yields k guesses."""
        self._update(tokens)
        length = len(tokens)
        for n in range(min(self.max_n, length - 1), self.min_n - 1, -1):
            start = self._next.get(tuple(tokens[length - n :]))
            if start is None:
                continue
            draft: list[int] = []
            for j in range(k):
                at = start + j
                draft.append(tokens[at] if at < length else draft[at - length])
            return draft
        return []

    def _update(self, tokens: list[int]) -> None:
        # Index every n-gram ending at `end` (exclusive) for which tokens[end] exists: the suffix of the
        # whole list is left out, so a lookup finds an *earlier* occurrence.
        table, low, high = self._next, self.min_n, self.max_n
        for end in range(max(self._indexed, low), len(tokens)):
            for n in range(low, min(high, end) + 1):
                table[tuple(tokens[end - n : end])] = end
        self._indexed = max(self._indexed, len(tokens))


@dataclass
class SpecState:
    """One sequence's speculation: its n-gram index and its acceptance, in total and this window."""

    index: NgramIndex
    proposed: int = 0
    accepted: int = 0
    window_proposed: int = 0
    window_accepted: int = 0
    paused: int = 0  # steps left without guesses
    pause: int = PAUSE  # the next pause's length

    @property
    def acceptance(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    def record(self, proposed: int, accepted: int) -> None:
        self.proposed += proposed
        self.accepted += accepted
        self.window_proposed += proposed
        self.window_accepted += accepted
        if self.window_proposed < WINDOW:
            return
        if self.window_accepted < ROW_COST * self.window_proposed:
            self.paused, self.pause = self.pause, min(2 * self.pause, MAX_PAUSE)
        else:
            self.pause = PAUSE
        self.window_proposed = self.window_accepted = 0


class Speculator:
    """The engine's n-gram speculation: guesses for each running sequence before a step is scheduled,
    and the totals the engine's stats report."""

    def __init__(self, num_tokens: int, min_n: int, max_n: int) -> None:
        self.num_tokens = num_tokens
        self.min_n, self.max_n = min_n, max_n
        self.proposed_tokens = 0
        self.accepted_tokens = 0
        self.verifications = 0  # sequence-steps that verified at least one guess

    def state(self) -> SpecState:
        return SpecState(NgramIndex(self.min_n, self.max_n))

    def propose(self, running: list[Sequence]) -> None:
        """Set `draft_token_ids` of each running sequence that decodes this step (empty: no guess).

        Never more guesses than the tokens a sequence may still produce after the one the step
        gives anyway (max_tokens), and never past MAX_STEP_ROWS rows in the step."""
        spare = MAX_STEP_ROWS - len(running)
        for seq in running:
            state = seq.spec
            if state is None:
                continue
            seq.draft_token_ids = []
            if state.paused:
                state.paused -= 1
                continue
            room = min(self.num_tokens, seq.max_tokens - seq.num_output_tokens - 1, spare)
            if room <= 0 or seq.num_computed_tokens != seq.num_tokens - 1:
                continue  # no room, or still prefilling
            seq.draft_token_ids = draft = state.index.propose(seq.token_ids, room)
            spare -= len(draft)

    def record(self, seq: Sequence, proposed: int, accepted: int) -> None:
        assert seq.spec is not None
        seq.spec.record(proposed, accepted)
        self.proposed_tokens += proposed
        self.accepted_tokens += accepted
        self.verifications += 1
