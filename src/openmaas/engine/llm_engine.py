"""LLMEngine: the synchronous core loop — admit requests, step the model, emit typed outputs.

`add_request` validates and queues; `step` schedules one batch, runs it, samples, detokenises,
checks stop conditions and returns one `RequestOutput` per choice that advanced; `abort` drops a
request and frees its KV blocks at once. Not thread-safe: `AsyncLLMEngine` drives it from one thread.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from openmaas.engine.block_manager import BlockManager
from openmaas.engine.config import EngineConfig
from openmaas.engine.detokenizer import IncrementalDetokenizer
from openmaas.engine.guided import GrammarCompiler
from openmaas.engine.lora import LoraRequest
from openmaas.engine.model_runner import ModelRunner
from openmaas.engine.models.config import ModelConfig
from openmaas.engine.outputs import CompletionResult, RequestOutput, TokenLogprob
from openmaas.engine.prompt_limits import PromptLimits
from openmaas.engine.sampler import SampledToken, Sampler
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.scheduler import Scheduler
from openmaas.engine.sequence import FinishReason, Sequence
from openmaas.engine.speculative import Speculator
from openmaas.engine.tokenizer import Tokenizer
from openmaas.errors import InvalidRequest
from openmaas.histogram import Histogram

# Seconds from a request's arrival to its first token, and between a choice's successive tokens.
TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40)
ITL_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5)


@dataclass(frozen=True)
class EngineStats:
    num_running: int
    num_waiting: int
    num_blocks: int
    num_free_blocks: int
    prefix_cache_hit_blocks: int
    num_preemptions: int
    # Prefix-cache lookups: full prompt blocks looked up, and how many of them were found.
    prefix_cache_queried_blocks: int = 0
    prefix_cache_found_blocks: int = 0
    prompt_tokens: int = 0  # of requests that produced a first token
    generation_tokens: int = 0
    # Speculative decoding: guessed tokens verified, and how many of them the model agreed with.
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0


class LLMEngine:
    def __init__(self, config: EngineConfig, tokenizer: Tokenizer | None = None) -> None:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.config = config
        self.model_config = ModelConfig.from_pretrained(config.model)
        self.max_model_len = config.max_model_len or self.model_config.max_position_embeddings
        if tokenizer is None and (Path(config.model) / "tokenizer.json").exists():
            tokenizer = Tokenizer.from_pretrained(config.model)
        self.tokenizer = tokenizer
        self.runner = ModelRunner(config, self.model_config, self.max_model_len)
        self.block_manager = BlockManager(
            self.runner.num_blocks, config.block_size, config.enable_prefix_caching
        )
        self.scheduler = Scheduler(config, self.block_manager, self.runner.adapters)
        eos = set(self.model_config.eos_token_ids)
        if tokenizer is not None and tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos)
        # Grammars (structured output) compile against the tokenizer, once per spec, on first use.
        self.grammars: GrammarCompiler | None = None
        if tokenizer is not None:
            vocab = max(self.model_config.vocab_size, tokenizer.vocab_size)
            self.grammars = GrammarCompiler(tokenizer.to_json(), vocab, sorted(self.eos_token_ids))
        grammar_vocab = self.grammars.vocab_size if self.grammars is not None else None
        self.sampler = Sampler(self.runner.kernels, self.eos_token_ids, grammar_vocab)
        self.speculator: Speculator | None = None
        if config.speculative_tokens:
            self.speculator = Speculator(
                config.speculative_tokens, config.prompt_lookup_min, config.prompt_lookup_max
            )
        self._limits = self.prompt_limits
        self._requests: dict[str, list[Sequence]] = {}
        self._detok: dict[int, IncrementalDetokenizer] = {}
        self._num_preemptions = 0
        self._prompt_tokens = 0
        self._generation_tokens = 0
        # Read by `/metrics` from another thread; written only by the step loop.
        self.time_to_first_token = Histogram(TTFT_BOUNDS)
        self.inter_token_latency = Histogram(ITL_BOUNDS)

    @classmethod
    def from_pretrained(cls, model: str | Path, **options: Any) -> LLMEngine:
        return cls(EngineConfig(model=str(model), **options))

    # --- requests -------------------------------------------------------------------------------
    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        lora: LoraRequest | None = None,
        priority: int = 0,
    ) -> None:
        """Queue a request (its `params.n` choices), on the LoRA adapter `lora` if given, admitted
        after waiting requests of a lower `priority` (batch lines wait behind live requests). Raises
        InvalidRequest naming the bad parameter (`model` for an adapter that cannot be served)."""
        if request_id in self._requests:
            raise InvalidRequest(f"request id {request_id!r} is already in use", param="request_id")
        max_tokens = self.check_prompt(prompt_token_ids, params)
        if lora is not None:
            if self.runner.adapters is None:
                raise InvalidRequest("This deployment serves no adapters (max_loras is 0).", param="model")
            self.runner.adapters.check(lora)
        now = time.monotonic()
        seqs: list[Sequence] = []
        for index in range(params.n):
            generator = None
            if not params.greedy:
                seed = params.seed + index if params.seed is not None else random.getrandbits(63)
                generator = torch.Generator(device=self.config.torch_device).manual_seed(seed)
            seq = Sequence(
                request_id, prompt_token_ids, params, max_tokens, index, generator, now, lora, priority
            )
            if self.tokenizer is not None:
                self._detok[seq.seq_id] = IncrementalDetokenizer(
                    self.tokenizer, prompt_token_ids, params.stop, params.skip_special_tokens
                )
            if params.grammar is not None and self.grammars is not None:
                seq.matcher = self.grammars.matcher(params.grammar)
            elif self.speculator is not None:
                # A grammar's masks follow its matcher one token at a time: constrained choices
                # decode without guesses.
                seq.spec = self.speculator.state()
            if index and self.config.enable_prefix_caching:
                seq.prefix_leader = seqs[0]
            seqs.append(seq)
        self._requests[request_id] = seqs
        for seq in seqs:
            self.scheduler.add(seq)

    @property
    def prompt_limits(self) -> PromptLimits:
        """What a request must fit in this engine, as plain numbers (checkable elsewhere too)."""
        return PromptLimits(
            vocab_size=self.model_config.vocab_size,
            max_model_len=self.max_model_len,
            has_tokenizer=self.tokenizer is not None,
            step_token_budget=self.config.step_token_budget,
            chunked_prefill=self.config.enable_chunked_prefill,
            block_size=self.block_manager.block_size,
            num_blocks=self.block_manager.num_blocks,
        )

    def check_prompt(self, prompt_token_ids: list[int], params: SamplingParams) -> int:
        """Validate a prompt against this model; return the request's effective max_tokens."""
        return self._limits.check(prompt_token_ids, params, self.grammars)

    def abort(self, request_id: str) -> bool:
        """Drop a request and free its blocks now. Returns False if it was unknown or already done."""
        seqs = self._requests.pop(request_id, None)
        if seqs is None:
            return False
        for seq in seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, FinishReason.ABORT)
            self._detok.pop(seq.seq_id, None)
        return True

    def is_active(self, request_id: str) -> bool:
        return request_id in self._requests

    def close(self) -> None:
        """Stop what the engine runs beside its steps (the grammar masks' thread); its owner calls
        this once no step runs any more."""
        self.sampler.close()
        self.runner.close()

    @property
    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    def stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            num_blocks=bm.num_blocks,
            num_free_blocks=bm.num_free_blocks,
            prefix_cache_hit_blocks=bm.prefix_hits,
            num_preemptions=self._num_preemptions,
            prefix_cache_queried_blocks=bm.prefix_queried,
            prefix_cache_found_blocks=bm.prefix_found,
            prompt_tokens=self._prompt_tokens,
            generation_tokens=self._generation_tokens,
            spec_draft_tokens=self.speculator.proposed_tokens if self.speculator else 0,
            spec_accepted_tokens=self.speculator.accepted_tokens if self.speculator else 0,
        )

    # --- the loop -------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        if self.speculator is not None:
            self.speculator.propose(self.scheduler.running)
        decision = self.scheduler.schedule()
        self._num_preemptions += len(decision.preempted)
        if not decision.scheduled:
            return []
        if self.grammars is not None and self.grammars.compiled:  # some request ever had a grammar
            constrained = [item.seq for item in decision.scheduled if item.seq.matcher is not None]
            if constrained:  # their masks are computed while the model runs
                self.sampler.prefetch_masks(constrained)
        logits, sampling, drafted = self.runner.execute(decision.scheduled)
        guessed = logits[len(sampling) :] if drafted else logits
        if drafted:
            logits = logits[: len(sampling)]
        samples = self.sampler(logits, sampling) if sampling else []
        for item in decision.scheduled:
            if not item.draft:
                item.seq.num_computed_tokens += item.num_tokens
                self.block_manager.cache_full_blocks(item.seq)
        now = time.monotonic()
        outputs = [self._advance(seq, sample, now) for seq, sample in zip(sampling, samples, strict=True)]
        row = 0
        for item in drafted:
            rows = len(item.draft) + 1
            outputs.append(self._verify(item.seq, item.draft, guessed[row : row + rows], now))
            row += rows
        return outputs

    def _advance(self, seq: Sequence, sample: SampledToken, now: float) -> RequestOutput:
        detok = self._detok.get(seq.seq_id)  # fetched first: a finished request forgets it
        reason = self._take(seq, sample, detok, now)
        logprobs = None
        if seq.params.logprobs:
            assert sample.logprob is not None
            logprobs = [TokenLogprob(sample.token_id, sample.logprob, sample.top_logprobs)]
        return self._output(seq, [sample.token_id], logprobs, reason, detok)

    def _verify(self, seq: Sequence, draft: tuple[int, ...], rows: torch.Tensor, now: float) -> RequestOutput:
        """Accept the longest prefix of `draft` that the model's own choices agree with, plus the model's
        next token after it. `rows` are the logits after the last token and after each guess.

        Row j is sampled only once rows 0..j-1 gave exactly the guesses, so it sees the context the
        model saw, and each emitted token is drawn as plain decoding draws it (same generator, same
        order): greedy output is unchanged, and a sampled token equals a guess x with probability
        p(x) and otherwise follows p without x, renormalised — the standard rule for a deterministic
        draft, so seeded requests give the same tokens with speculation on or off."""
        speculator = self.speculator
        assert speculator is not None
        picks = self.sampler(rows, [seq] * len(rows)) if self.sampler.is_plain(seq) else None
        detok = self._detok.get(seq.seq_id)
        tokens: list[int] = []
        logprobs: list[TokenLogprob] | None = [] if seq.params.logprobs else None
        accepted = 0
        reason: FinishReason | None = None
        for j in range(len(rows)):
            # The last token and the guesses accepted so far have their KV in the cache now; blocks
            # they filled are cached before a token that finishes the choice frees them.
            seq.num_computed_tokens = seq.num_tokens
            self.block_manager.cache_full_blocks(seq)
            sample = picks[j] if picks is not None else self.sampler(rows[j : j + 1], [seq])[0]
            tokens.append(sample.token_id)
            if logprobs is not None:
                assert sample.logprob is not None
                logprobs.append(TokenLogprob(sample.token_id, sample.logprob, sample.top_logprobs))
            reason = self._take(seq, sample, detok, now)
            if j == len(draft) or sample.token_id != draft[j]:
                break
            accepted += 1
            if reason is not None:
                break
        speculator.record(seq, len(draft), accepted)
        if reason is None:
            # Roll back to what was committed (the last token is not computed yet): KV of rejected
            # guesses sits past num_computed_tokens, in blocks handed back now; what is left of it is
            # overwritten before anything reads or caches it.
            self.block_manager.truncate(seq)
        return self._output(seq, tokens, logprobs, reason, detok)

    def _take(
        self, seq: Sequence, sample: SampledToken, detok: IncrementalDetokenizer | None, now: float
    ) -> FinishReason | None:
        """Append one sampled token; return why the choice finished with it (it is then finished)."""
        token = sample.token_id
        seq.append_token(token)
        self._count_token(seq, now)
        params = seq.params
        reason: FinishReason | None = None
        if (token in self.eos_token_ids and not params.ignore_eos) or token in params.stop_token_ids:
            reason = FinishReason.STOP
        if detok is not None and reason is None and detok.add_token(token) is not None:
            reason = FinishReason.STOP
        # The grammar is complete (nothing but end of sequence may follow): the output is whole.
        if seq.matcher is not None and (not seq.matcher.accept(token) or seq.matcher.done) and reason is None:
            reason = FinishReason.STOP
        if reason is None and seq.num_output_tokens >= seq.max_tokens:
            reason = FinishReason.LENGTH
            if detok is not None:
                detok.flush()
        if reason is not None:
            self.scheduler.finish(seq, reason)
            self._forget_if_done(seq.request_id)
        return reason

    def _output(
        self,
        seq: Sequence,
        tokens: list[int],
        logprobs: list[TokenLogprob] | None,
        reason: FinishReason | None,
        detok: IncrementalDetokenizer | None,
    ) -> RequestOutput:
        return RequestOutput(
            request_id=seq.request_id,
            index=seq.index,
            new_token_ids=tokens,
            text_delta=detok.take_delta(reason is not None) if detok else "",
            text=detok.text if detok else "",
            logprobs=logprobs,
            finish_reason=reason.value if reason is not None else None,
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_output_tokens,
        )

    def _count_token(self, seq: Sequence, now: float) -> None:
        """Token counts and latencies for `/metrics` (time to first token once per request)."""
        self._generation_tokens += 1
        if seq.num_output_tokens == 1:
            if seq.index == 0:
                self._prompt_tokens += seq.num_prompt_tokens
                self.time_to_first_token.observe(now - seq.arrival)
        else:
            self.inter_token_latency.observe(now - seq.last_token_at)
        seq.last_token_at = now

    def _forget_if_done(self, request_id: str) -> None:
        seqs = self._requests.get(request_id, [])
        if all(s.is_finished for s in seqs):
            self._requests.pop(request_id, None)
            for s in seqs:
                self._detok.pop(s.seq_id, None)

    # --- offline convenience --------------------------------------------------------------------
    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams | list[SamplingParams],
        loras: list[LoraRequest | None] | None = None,
    ) -> list[list[CompletionResult]]:
        """Run prompts to completion (prompt i on adapter `loras[i]`, if given); returns, per prompt,
        its choices in index order."""
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        adapters = loras if loras is not None else [None] * len(prompts)
        results: dict[str, list[CompletionResult]] = {}
        for i, (prompt, p) in enumerate(zip(prompts, per_prompt, strict=True)):
            request_id = f"generate-{id(self)}-{i}"
            self.add_request(request_id, prompt, p, adapters[i])
            results[request_id] = [CompletionResult(request_id, k) for k in range(p.n)]
        while self.has_unfinished_requests:
            for out in self.step():
                results[out.request_id][out.index].add(out)
        return list(results.values())
