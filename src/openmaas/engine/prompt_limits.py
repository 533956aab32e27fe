"""What a request must fit in one engine: its vocabulary, context length, step budget and KV cache.

Plain numbers, so the check runs wherever the request is — in the engine as it admits, or in an
API server whose engine runs elsewhere (a Ray replica, serving/ray_llm.py), before the request is
admitted and billed. Refusals are `InvalidRequest` naming the field, as the engine's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from openmaas.engine.guided import PARAM as GRAMMAR_PARAM
from openmaas.engine.guided import GrammarCompiler
from openmaas.engine.sampling_params import SamplingParams
from openmaas.errors import InvalidRequest


@dataclass(frozen=True)
class PromptLimits:
    vocab_size: int
    max_model_len: int
    has_tokenizer: bool
    step_token_budget: int
    chunked_prefill: bool
    block_size: int
    num_blocks: int

    def check(
        self, prompt_token_ids: list[int], params: SamplingParams, grammars: GrammarCompiler | None
    ) -> int:
        """Validate a prompt; return the request's effective max_tokens. A grammar is compiled by
        `grammars` (cached there), so one that does not compile is refused now."""
        n = len(prompt_token_ids)
        if n == 0:
            raise InvalidRequest("the prompt is empty", param="prompt")
        vocab = self.vocab_size
        if any(not 0 <= t < vocab for t in prompt_token_ids):
            raise InvalidRequest(f"prompt token ids must be in [0, {vocab})", param="prompt")
        if params.stop and not self.has_tokenizer:
            raise InvalidRequest("stop strings need a tokenizer, and this model has none", param="stop")
        if params.logit_bias and max(params.logit_bias) >= vocab:
            raise InvalidRequest(
                f"logit_bias token id {max(params.logit_bias)} is outside the vocabulary [0, {vocab})",
                param="logit_bias",
            )
        if params.grammar is not None:
            if grammars is None:
                message = "structured output needs a tokenizer, and this model has none"
                raise InvalidRequest(message, param=GRAMMAR_PARAM)
            grammars.compile(params.grammar)  # refused now if it does not compile; cached
        limit = self.max_model_len
        if n >= limit or (params.max_tokens is not None and n + params.max_tokens > limit):
            asked = n + (params.max_tokens or 1)
            raise InvalidRequest(
                f"This model's maximum context length is {limit} tokens. However, you requested {asked} "
                f"tokens ({n} in the prompt, {asked - n} for the completion).",
                param="messages",
                code="context_length_exceeded",
            )
        max_tokens = params.max_tokens if params.max_tokens is not None else limit - n
        budget = self.step_token_budget
        if not self.chunked_prefill and n + max_tokens > budget:
            # Without chunked prefill a sequence is computed in one step, also when it is recomputed
            # after a preemption: past the step budget it could never be scheduled.
            raise InvalidRequest(
                f"prompt plus max_tokens ({n + max_tokens} tokens) exceeds this engine's step budget "
                f"({budget} tokens) with chunked prefill off",
                param="max_tokens",
                code="context_length_exceeded",
            )
        if -(-(n + max_tokens) // self.block_size) > self.num_blocks:
            raise InvalidRequest(
                f"prompt plus max_tokens ({n + max_tokens} tokens) exceeds this deployment's KV cache",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return max_tokens
