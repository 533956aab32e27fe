"""Sampler: picks each sequence's next token from its logits, honouring its SamplingParams.

Rows of plain greedy sequences (no penalties, no logprobs: the common case) take one max over the
logits in their own dtype, with no float copy: a copy of 64 x 151936 logits costs more than the
reduction. The other rows go through the full path on an fp32 copy of just those rows: log-probabilities
from the raw logits (what the model believes, as vLLM reports them); then presence/frequency penalties
over the tokens generated so far, and the other logits processors a request asked for (logit_bias,
min_tokens, repetition_penalty); then the grammar masks of constrained rows, all computed together and
applied in one operation (engine/guided.py); then greedy argmax, or temperature, top-k, top-p, min-p
and a draw from the sequence's own `torch.Generator`, so a seeded request gives the same tokens whatever
else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from openmaas.engine.guided import GrammarMatcher, TokenMasks
from openmaas.engine.kernels import CpuKernels
from openmaas.engine.sequence import Sequence

# Below this a temperature is greedy in all but name; dividing by a float32 that small overflows.
_MIN_TEMPERATURE = 1e-6


@dataclass
class SampledToken:
    token_id: int
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)


class Sampler:
    def __init__(
        self,
        kernels: CpuKernels | None = None,
        eos_token_ids: frozenset[int] = frozenset(),
        grammar_vocab_size: int | None = None,
    ) -> None:
        self.kernels = kernels  # our CPU kernels' greedy pick, when the model runs them
        self.eos_token_ids = sorted(eos_token_ids)  # what min_tokens holds back
        self.grammar_vocab_size = grammar_vocab_size  # the grammar engine's mask width
        self._masks: TokenMasks | None = None  # made by the first constrained row

    def _greedy(self, logits: torch.Tensor) -> list[int]:
        kernels = self.kernels
        if kernels is not None and logits.dtype == kernels.dtype and logits.is_contiguous():
            return kernels.argmax(logits)
        return greedy_token_ids(logits)

    @staticmethod
    def is_plain(seq: Sequence) -> bool:
        """Whether `seq`'s token is the plain greedy pick of its logits (nothing else to apply)."""
        return _plain_greedy(seq)

    def prefetch_masks(self, seqs: list[Sequence]) -> None:
        """Start the grammar masks of these constrained sequences while the model runs."""
        self._token_masks(None).prefetch([seq.matcher for seq in seqs if seq.matcher is not None])

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[SampledToken]:
        try:
            return self._pick(logits, seqs)
        finally:
            if self._masks is not None:
                self._masks.forget()

    def _pick(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[SampledToken]:
        plain = [row for row, seq in enumerate(seqs) if _plain_greedy(seq)]
        if len(plain) == len(seqs):
            return [SampledToken(t) for t in self._greedy(logits)]
        out = [SampledToken(-1) for _ in seqs]
        if plain:
            for row, token_id in zip(plain, self._greedy(logits[plain]), strict=True):
                out[row].token_id = token_id
        # Greedy rows whose only processor is a grammar: masked into a new tensor, then the same
        # greedy pick as plain rows (no fp32 copy first, no per-row work).
        masked = [row for row, seq in enumerate(seqs) if _masked_greedy(seq)]
        if masked:
            rows = logits if len(masked) == len(seqs) else logits[masked]
            matchers: list[GrammarMatcher] = [seqs[row].matcher for row in masked]  # type: ignore[misc]
            picked = self._greedy(self._token_masks(logits).masked(rows, matchers))
            for row, token_id in zip(masked, picked, strict=True):
                out[row].token_id = token_id
        others = [row for row, seq in enumerate(seqs) if not _plain_greedy(seq) and not _masked_greedy(seq)]
        if others:
            # Indexing with a list copies: the caller's logits stay untouched by the penalties.
            sampled = self._sample(logits[others].float(), [seqs[row] for row in others])
            for row, sample in zip(others, sampled, strict=True):
                out[row] = sample
        return out

    def close(self) -> None:
        """Stop the grammar masks' background thread, if a constrained row started it."""
        if self._masks is not None:
            self._masks.close()

    def _token_masks(self, logits: torch.Tensor | None) -> TokenMasks:
        if self._masks is None:
            width = logits.shape[1] if logits is not None else 0
            self._masks = TokenMasks(self.grammar_vocab_size or width)
        return self._masks

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[SampledToken]:
        """The full path, on an fp32 copy of these rows' logits (penalties are applied in place)."""
        logprobs = self._logprobs(logits, seqs)
        constrained: list[int] = []
        for row, seq in enumerate(seqs):
            if seq.params.has_penalties and seq.num_output_tokens:
                self._apply_penalties(logits[row], seq)
            if seq.params.has_processors:
                self._apply_processors(logits[row], seq)
            if seq.matcher is not None:
                constrained.append(row)
        if constrained:
            self._apply_grammars(logits, constrained, seqs)
        token_ids = greedy_token_ids(logits)
        for row, seq in enumerate(seqs):
            if not seq.params.greedy:
                token_ids[row] = self._draw(logits[row], seq)
        out = [SampledToken(t) for t in token_ids]
        for row, lp in logprobs.items():
            seq_lp, k = lp
            out[row].logprob = float(seq_lp[token_ids[row]])
            if k:
                values, ids = seq_lp.topk(k)
                out[row].top_logprobs = list(zip(ids.tolist(), values.tolist(), strict=True))
        return out

    @staticmethod
    def _logprobs(logits: torch.Tensor, seqs: list[Sequence]) -> dict[int, tuple[torch.Tensor, int]]:
        rows = [i for i, s in enumerate(seqs) if s.params.logprobs]
        if not rows:
            return {}
        values = torch.log_softmax(logits[rows], dim=-1)
        return {row: (values[i], seqs[row].params.top_logprobs) for i, row in enumerate(rows)}

    @staticmethod
    def _apply_penalties(row: torch.Tensor, seq: Sequence) -> None:
        output = torch.tensor(seq.output_token_ids, dtype=torch.long, device=row.device)
        counts = torch.bincount(output, minlength=row.shape[0])[: row.shape[0]].to(row.dtype)
        row -= seq.params.frequency_penalty * counts + seq.params.presence_penalty * (counts > 0).to(
            row.dtype
        )

    def _apply_processors(self, row: torch.Tensor, seq: Sequence) -> None:
        params = seq.params
        vocab = row.shape[0]
        if params.logit_bias:
            ids = torch.tensor(list(params.logit_bias), dtype=torch.long, device=row.device)
            bias = torch.tensor(list(params.logit_bias.values()), dtype=row.dtype, device=row.device)
            row.index_add_(0, ids, bias)
        if params.repetition_penalty != 1.0:
            # vLLM's semantics (CTRL's): every token seen in the prompt or the output, once.
            seen = torch.tensor(seq.token_ids, dtype=torch.long, device=row.device).unique()
            values = row[seen]
            p = params.repetition_penalty
            row[seen] = torch.where(values > 0, values / p, values * p)
        if seq.num_output_tokens < params.min_tokens:
            held = [] if params.ignore_eos else list(self.eos_token_ids)
            held += [t for t in params.stop_token_ids if t < vocab]
            if held:
                row[torch.tensor(held, dtype=torch.long, device=row.device)] = float("-inf")

    def _apply_grammars(self, logits: torch.Tensor, rows: list[int], seqs: list[Sequence]) -> None:
        masks = self._token_masks(logits)
        matchers: list[GrammarMatcher] = [seqs[row].matcher for row in rows]  # type: ignore[misc]
        if len(rows) == logits.shape[0]:
            masks.apply(logits, matchers)
        else:
            logits[rows] = masks.masked(logits[rows], matchers)
        for row in rows:
            seq = seqs[row]
            # min_tokens held end-of-sequence back, but the grammar allows nothing else: let it end
            # (a row of -inf has no distribution to draw from).
            if seq.num_output_tokens < seq.params.min_tokens and bool(logits[row].max().isinf()):
                logits[row, self.eos_token_ids] = 0.0

    @staticmethod
    def _draw(row: torch.Tensor, seq: Sequence) -> int:
        params = seq.params
        # The temperature kept above float32's underflow: a tinier one divided by zero and drew
        # from NaN probabilities, which stopped the engine (softmax takes large finite scores).
        scores = row / max(params.temperature, _MIN_TEMPERATURE)
        candidates: torch.Tensor | None = None
        if params.top_k > 0 and params.top_k < scores.shape[0]:
            scores, candidates = scores.topk(params.top_k)
        if params.top_p < 1.0:
            sorted_scores, order = scores.sort(descending=True)
            probs = sorted_scores.softmax(-1)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            drop = probs.cumsum(-1) - probs >= params.top_p
            drop[0] = False  # also when top_p is 0 as a float32 (5e-324 is)
            sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
            scores = torch.empty_like(scores).scatter_(0, order, sorted_scores)
        probs = scores.softmax(-1)
        if params.min_p > 0.0:
            probs = probs.masked_fill(probs < params.min_p * probs.max(), 0.0)
        choice = int(torch.multinomial(probs, 1, generator=seq.generator).item())
        return int(candidates[choice].item()) if candidates is not None else choice


def greedy_token_ids(logits: torch.Tensor) -> list[int]:
    """The first index of each row's largest logit, as argmax of the fp32 values gives it.

    `max(dim)` rather than `argmax`: on CPU its bf16 kernel is several times faster, and bf16 -> fp32
    is exact, so the index is the same.
    """
    return logits.max(dim=-1).indices.tolist()


def _masked_greedy(seq: Sequence) -> bool:
    """Greedy, constrained by a grammar, and nothing else to do to the logits."""
    params = seq.params
    return (
        seq.matcher is not None
        and params.greedy
        and not params.logprobs
        and not params.has_penalties
        and not params.logit_bias
        and params.repetition_penalty == 1.0
        and seq.num_output_tokens >= params.min_tokens
    )


def _plain_greedy(seq: Sequence) -> bool:
    params = seq.params
    return params.greedy and not params.logprobs and not params.has_penalties and not params.has_processors
