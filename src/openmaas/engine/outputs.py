"""Typed results the engine hands out: one `RequestOutput` per choice that advanced in a step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReasonName = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probability of a generated token, with the `top_logprobs` most likely alternatives."""

    token_id: int
    logprob: float
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)


@dataclass(frozen=True)
class RequestOutput:
    """What one choice (`index`) of a request produced since its last output.

    `text_delta` is safe to stream (never half a character, never the start of a stop string);
    `text` is everything so far. `finish_reason` is set on the choice's last output only.
    """

    request_id: str
    index: int
    new_token_ids: list[int]
    text_delta: str
    text: str
    logprobs: list[TokenLogprob] | None
    finish_reason: FinishReasonName | None
    prompt_tokens: int
    completion_tokens: int

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class CompletionResult:
    """A finished choice, accumulated from its `RequestOutput`s (what a non-streaming reply needs)."""

    request_id: str
    index: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReasonName | None = None
    prompt_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    def add(self, out: RequestOutput) -> None:
        self.token_ids.extend(out.new_token_ids)
        self.text = out.text
        if out.logprobs is not None:
            self.logprobs = (self.logprobs or []) + out.logprobs
        self.finish_reason = out.finish_reason
        self.prompt_tokens = out.prompt_tokens
