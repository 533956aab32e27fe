"""SamplingParams: how one request wants its tokens chosen and when it wants generation to stop.

Validation raises `InvalidRequest` naming the offending parameter the way the OpenAI API does, so the
HTTP layer can pass values straight through. Nothing here touches tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openmaas.engine.guided import GrammarSpec
from openmaas.errors import InvalidRequest

MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20
MAX_N = 128
# OpenAI's bounds for `seed`: a signed 64-bit integer. Each of the `n` choices seeds its own
# torch.Generator with `seed + index`, which stays below 2**64, the most manual_seed takes.
MIN_SEED = -(2**63)
MAX_SEED = 2**63 - 1
LOGIT_BIAS_LIMIT = 100.0
MAX_LOGIT_BIAS_ENTRIES = 300
MAX_REPETITION_PENALTY = 10.0
# As far below 1 as the maximum is above it: a penalty of 5e-324 divided logits into infinities,
# whose probabilities were NaN, and failed the engine's step (a 500 the schema fuzzer found).
MIN_REPETITION_PENALTY = 1 / MAX_REPETITION_PENALTY


@dataclass
class SamplingParams:
    """Per-request sampling settings (OpenAI names). `max_tokens` None fills the context window.

    `temperature` 0 means greedy. `top_k` 0 or -1 disables top-k. `logprobs` asks for the chosen
    token's log-probability; `top_logprobs` (0–20) for that many alternatives at each position.

    Logits processors, as vLLM names them: `logit_bias` (token id → -100..100, added to the logits),
    `min_p` (drop tokens less likely than min_p x the likeliest, after temperature),
    `repetition_penalty` (divide positive, multiply negative logits of tokens in the prompt or the
    output; 1 is off), `min_tokens` (end-of-sequence and `stop_token_ids` masked until that many
    tokens are out), and `grammar` (the output must match it; see engine/guided.py).
    """

    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    skip_special_tokens: bool = True
    logit_bias: dict[int, float] = field(default_factory=dict)
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    grammar: GrammarSpec | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop)
        self.stop_token_ids = list(self.stop_token_ids)
        self.validate()

    def validate(self) -> None:
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            _bad("max_tokens", f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not 0.0 <= self.temperature <= 2.0:
            _bad("temperature", f"temperature must be between 0 and 2, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            _bad("top_p", f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            _bad("top_k", f"top_k must be -1, 0 (disabled) or a positive integer, got {self.top_k!r}")
        seed = self.seed
        if seed is not None and (type(seed) is not int or not MIN_SEED <= seed <= MAX_SEED):
            _bad("seed", f"seed must be an integer from {MIN_SEED} to {MAX_SEED}, got {self.seed!r}")
        if len(self.stop) > MAX_STOP_STRINGS:
            _bad("stop", f"at most {MAX_STOP_STRINGS} stop sequences are allowed, got {len(self.stop)}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            _bad("stop", "stop sequences must be non-empty strings")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            _bad("stop_token_ids", "stop_token_ids must be non-negative integers")
        if not isinstance(self.n, int) or not 1 <= self.n <= MAX_N:
            _bad("n", f"n must be an integer between 1 and {MAX_N}, got {self.n!r}")
        if not -2.0 <= self.presence_penalty <= 2.0:
            _bad(
                "presence_penalty", f"presence_penalty must be between -2 and 2, got {self.presence_penalty}"
            )
        if not -2.0 <= self.frequency_penalty <= 2.0:
            _bad(
                "frequency_penalty",
                f"frequency_penalty must be between -2 and 2, got {self.frequency_penalty}",
            )
        if not isinstance(self.top_logprobs, int) or not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            _bad("top_logprobs", f"top_logprobs must be an integer between 0 and {MAX_TOP_LOGPROBS}")
        if self.top_logprobs and not self.logprobs:
            _bad("top_logprobs", "top_logprobs requires logprobs to be true")
        self._validate_processors()

    def _validate_processors(self) -> None:
        if not isinstance(self.logit_bias, dict) or len(self.logit_bias) > MAX_LOGIT_BIAS_ENTRIES:
            _bad("logit_bias", f"logit_bias must map at most {MAX_LOGIT_BIAS_ENTRIES} token ids to biases")
        for token_id, bias in self.logit_bias.items():
            if type(token_id) is not int or token_id < 0:
                _bad("logit_bias", f"logit_bias keys must be token ids, got {token_id!r}")
            if not isinstance(bias, int | float) or not -LOGIT_BIAS_LIMIT <= bias <= LOGIT_BIAS_LIMIT:
                _bad("logit_bias", f"logit_bias values must be in [-100, 100], got {bias!r}")
        if not isinstance(self.min_p, int | float) or not 0.0 <= self.min_p <= 1.0:
            _bad("min_p", f"min_p must be between 0 and 1, got {self.min_p!r}")
        penalty = self.repetition_penalty
        if (
            not isinstance(penalty, int | float)
            or not MIN_REPETITION_PENALTY <= penalty <= MAX_REPETITION_PENALTY
        ):
            _bad(
                "repetition_penalty",
                f"repetition_penalty must be between {MIN_REPETITION_PENALTY:g} and "
                f"{MAX_REPETITION_PENALTY:g}, got {penalty!r}",
            )
        if type(self.min_tokens) is not int or self.min_tokens < 0:
            _bad("min_tokens", f"min_tokens must be a non-negative integer, got {self.min_tokens!r}")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            _bad("min_tokens", f"min_tokens ({self.min_tokens}) exceeds max_tokens ({self.max_tokens})")
        if self.grammar is not None and not isinstance(self.grammar, GrammarSpec):
            _bad("response_format", "grammar must be a GrammarSpec")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def has_processors(self) -> bool:
        """Anything beyond temperature/top-k/top-p that touches the logits (not the plain path)."""
        return bool(
            self.grammar is not None
            or self.logit_bias
            or self.min_p
            or self.repetition_penalty != 1.0
            or self.min_tokens
        )


def _bad(param: str, message: str) -> None:
    raise InvalidRequest(message, param=param, code="invalid_value")
