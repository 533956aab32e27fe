"""Guided decoding: grammars (JSON schemas, Lark) compiled to per-token masks by llguidance.

A request asks for a grammar with a `GrammarSpec` in its `SamplingParams`. `GrammarCompiler` (one per
engine, so one tokenizer) checks and compiles a spec once and keeps it in a bounded LRU cache; each
sequence then gets its own `GrammarMatcher`, a copy of the compiled start state that advances with
every accepted token. `TokenMasks` computes the masks of all constrained rows of a step in one call
(llguidance's executor, in parallel, into a bitmask buffer reused between steps) and applies them to
the logits in one tensor operation. Rows without a grammar never reach this module.

Compile errors and schema features llguidance does not implement raise `InvalidRequest` naming
`response_format`, with llguidance's message (which names the keyword) — before the request is
admitted. Nothing here samples or decides when a sequence stops: the sampler masks, the engine
advances the matcher and finishes the sequence when `GrammarMatcher.done`.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import llguidance
import numpy as np
import torch

from openmaas.errors import InvalidRequest

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

GrammarKind = Literal["json_object", "json_schema", "lark"]
GRAMMAR_KINDS: tuple[str, ...] = ("json_object", "json_schema", "lark")
# Compact JSON (no optional whitespace): a model cannot pad forever between tokens, and the output is
# what OpenAI's structured outputs return. `%json{...}` inside a Lark grammar may set its own options.
_JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False}
_ANY_OBJECT = '{"type":"object"}'
DEFAULT_CACHE_SIZE = 256
PARAM = "response_format"


@dataclass(frozen=True)
class GrammarSpec:
    """What the output must match. `source`: for "json_schema" the schema as canonical JSON text
    (`GrammarSpec.for_schema` makes it), for "lark" a Lark grammar in llguidance's dialect (which may
    embed JSON schemas as `%json{...}`); ignored for "json_object" (any JSON object)."""

    kind: GrammarKind
    source: str = ""

    @classmethod
    def for_schema(cls, schema: dict[str, Any]) -> GrammarSpec:
        # Keys keep their order: the order of `properties` is the order the output writes them.
        return cls("json_schema", json.dumps(schema, ensure_ascii=False, separators=(",", ":")))

    def to_llguidance(self) -> str:
        if self.kind == "json_object":
            return llguidance.LLMatcher.grammar_from_json_schema(_ANY_OBJECT, defaults=_JSON_OPTIONS)
        if self.kind == "json_schema":
            try:
                return llguidance.LLMatcher.grammar_from_json_schema(self.source, defaults=_JSON_OPTIONS)
            except ValueError as exc:
                raise InvalidRequest(f"the JSON schema is not valid: {exc}", param=PARAM) from exc
        if self.kind == "lark":
            return llguidance.LLMatcher.grammar_from_lark(self.source)
        raise InvalidRequest(f"unknown grammar kind {self.kind!r}", param=PARAM)


class GrammarMatcher:
    """One sequence's position in its grammar."""

    __slots__ = ("_m",)

    def __init__(self, matcher: llguidance.LLMatcher) -> None:
        self._m = matcher

    def accept(self, token_id: int) -> bool:
        """Advance by a sampled token; False if the grammar did not allow it (never, when masked)."""
        return bool(self._m.consume_token(token_id))

    @property
    def done(self) -> bool:
        """The grammar is complete and allows nothing but end of sequence (or the matcher failed)."""
        return bool(self._m.is_stopped())

    @property
    def accepting(self) -> bool:
        return bool(self._m.is_accepting())


class GrammarCompiler:
    """Compiles specs for one tokenizer; thread-safe (the API thread checks, the step thread uses)."""

    def __init__(
        self,
        tokenizer_json: str,
        vocab_size: int,
        eos_token_ids: list[int],
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._tokenizer_json = tokenizer_json
        self.vocab_size = vocab_size
        self._eos = sorted(eos_token_ids)
        self._cache_size = cache_size
        self._cache: OrderedDict[GrammarSpec, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        self._tokenizer: llguidance.LLTokenizer | None = None
        self.compiled = 0  # how many specs were compiled (cache misses), for tests and metrics

    def _ll_tokenizer(self) -> llguidance.LLTokenizer:
        # Built on first use (about a second for a 150k vocabulary), never for unconstrained traffic.
        if self._tokenizer is None:
            self._tokenizer = llguidance.LLTokenizer(
                self._tokenizer_json, n_vocab=self.vocab_size, eos_token=self._eos or None
            )
        return self._tokenizer

    def compile(self, spec: GrammarSpec) -> llguidance.LLMatcher:
        """The spec's start state, compiled once; raises InvalidRequest naming `response_format`."""
        with self._lock:
            start = self._cache.get(spec)
            if start is not None:
                self._cache.move_to_end(spec)
                return start
            tokenizer = self._ll_tokenizer()
        # Compiled outside the lock: the step thread fetching a cached spec never waits for a big
        # schema the API thread is compiling (two threads may compile one spec at once; both agree).
        start = llguidance.LLMatcher(tokenizer, spec.to_llguidance(), log_level=0)
        if start.is_error():
            raise InvalidRequest(f"{PARAM}: {_first_line(start.get_error())}", param=PARAM)
        with self._lock:
            self.compiled += 1
            self._cache[spec] = start
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return start

    def matcher(self, spec: GrammarSpec) -> GrammarMatcher:
        start = self.compile(spec)
        return GrammarMatcher(start.deep_copy())


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines)[:500] if lines else "the grammar is not valid"


# A byte of a bitmask → the 8 logits it covers: 0 where the bit is set (allowed), -inf elsewhere.
_BYTE_PENALTIES = np.where(
    np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little"), 0.0, -np.inf
).astype(np.float32)


class TokenMasks:
    """The constrained rows' masks of one step, computed together and applied in one operation.

    `prefetch` starts computing the masks of a step's constrained sequences in a background thread
    while the model runs (their matchers do not move until the sampler has picked), as vLLM and
    SGLang overlap them with the forward pass; `apply`/`masked` then wait for that result, or compute
    synchronously when nothing was prefetched for these matchers. The penalty buffer is kept and grown,
    not allocated per step. On CPU each mask byte is looked up as 8 penalties (0 or -inf) and added to
    the logits: measured 5x faster than unpacking bits into a boolean mask for `masked_fill_` at 16 x 32k.
    """

    def __init__(self, vocab_size: int, num_threads: int | None = None) -> None:
        self.vocab_size = vocab_size
        self.words = (vocab_size + 31) // 32
        self._executor = llguidance.LLExecutor(num_threads) if num_threads else llguidance.LLExecutor()
        self._penalties = np.zeros((0, self.words * 4, 8), dtype=np.float32)
        self._shifts: torch.Tensor | None = None
        self._pool: ThreadPoolExecutor | None = None
        # The step's prefetched masks: done when set, row of each matcher (by identity), bits.
        self._pending: tuple[Future[None], dict[int, int], np.ndarray] | None = None

    def prefetch(self, matchers: list[GrammarMatcher]) -> None:
        """Start computing these matchers' masks in the background (valid until `forget`)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="grammar-masks")
        bits = np.empty((len(matchers), self.words), dtype=np.int32)  # its own: the thread writes it
        future = self._pool.submit(self._compute, matchers, bits)
        self._pending = (future, {id(m): i for i, m in enumerate(matchers)}, bits)

    def forget(self) -> None:
        """Drop the prefetched masks (their matchers are about to advance)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending[0].result()  # never leave the thread writing into a buffer nobody holds

    def close(self) -> None:
        """Stop the background thread (waiting for a mask it is computing)."""
        self.forget()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def apply(self, logits: torch.Tensor, matchers: list[GrammarMatcher]) -> None:
        """Mask `logits` (one row per matcher, in order) in place: disallowed tokens get -inf."""
        self._mask(logits, matchers, in_place=True)

    def masked(self, logits: torch.Tensor, matchers: list[GrammarMatcher]) -> torch.Tensor:
        """A masked copy of `logits`, made in the same pass (the caller's tensor is untouched)."""
        return self._mask(logits, matchers, in_place=False)

    def _compute(self, matchers: list[GrammarMatcher], bits: np.ndarray) -> None:
        self._executor.unsafe_compute_mask_ptr(
            [(m._m, i) for i, m in enumerate(matchers)], bits.ctypes.data, self.words * 4, len(matchers)
        )

    def _bits(self, matchers: list[GrammarMatcher]) -> np.ndarray:
        if self._pending is not None:
            future, index, prefetched = self._pending
            rows = [index.get(id(m), -1) for m in matchers]
            if -1 not in rows:
                future.result()
                return prefetched if rows == list(range(len(prefetched))) else prefetched[rows]
        bits = np.empty((len(matchers), self.words), dtype=np.int32)
        self._compute(matchers, bits)
        return bits

    def _mask(self, logits: torch.Tensor, matchers: list[GrammarMatcher], in_place: bool) -> torch.Tensor:
        rows = len(matchers)
        bits = self._bits(matchers)
        width = logits.shape[1]
        if logits.device.type == "cpu" and logits.dtype == torch.float32:
            if self._penalties.shape[0] < rows:
                size = max(rows, 2 * self._penalties.shape[0])
                self._penalties = np.zeros((size, self.words * 4, 8), dtype=np.float32)
            penalties = self._penalties[:rows]
            np.take(_BYTE_PENALTIES, bits.view(np.uint8), axis=0, out=penalties, mode="clip")
            added = torch.from_numpy(penalties).view(rows, -1)[:, :width]
            return logits.add_(added) if in_place else torch.add(logits, added)
        if self._shifts is None or self._shifts.device != logits.device:
            self._shifts = torch.arange(32, dtype=torch.int32, device=logits.device)
        words = torch.from_numpy(np.ascontiguousarray(bits)).to(logits.device)
        banned = (((words.unsqueeze(-1) >> self._shifts) & 1) == 0).view(rows, -1)[:, :width]
        if in_place:
            return logits.masked_fill_(banned, float("-inf"))
        return logits.masked_fill(banned, float("-inf"))
