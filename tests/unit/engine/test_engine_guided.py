"""Guided decoding's pieces on a tiny trained tokenizer: the compile cache, matchers and masks."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
import torch

from openmaas.engine.guided import GrammarCompiler, GrammarSpec, TokenMasks
from openmaas.engine.testing import build_tokenizer
from openmaas.engine.tokenizer import Tokenizer

VOCAB = 512  # the model's logits are wider than the 500-token tokenizer, as in engine/testing.py


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    folder: Path = tmp_path_factory.mktemp("guided-tokenizer")
    build_tokenizer(folder)
    return Tokenizer.from_pretrained(folder)


def _compiler(tokenizer: Tokenizer, cache_size: int = 8) -> GrammarCompiler:
    return GrammarCompiler(tokenizer.to_json(), VOCAB, [2], cache_size=cache_size)


def test_specs_are_frozen_hashable_values() -> None:
    a = GrammarSpec.for_schema({"type": "object", "properties": {"b": {}, "a": {}}})
    assert a == GrammarSpec("json_schema", '{"type":"object","properties":{"b":{},"a":{}}}')  # order kept
    assert len({a, GrammarSpec.for_schema({"type": "object", "properties": {"b": {}, "a": {}}})}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.source = "{}"  # type: ignore[misc]


def test_the_cache_is_bounded_and_least_recently_used_goes_first(tokenizer: Tokenizer) -> None:
    compiler = _compiler(tokenizer, cache_size=2)
    specs = [GrammarSpec("lark", f'start: "{word}"') for word in ("a", "b", "c")]
    compiler.compile(specs[0])
    compiler.compile(specs[1])
    compiler.compile(specs[0])  # 0 is now the most recent
    compiler.compile(specs[2])  # evicts 1
    assert compiler.compiled == 3
    compiler.compile(specs[0])
    assert compiler.compiled == 3
    compiler.compile(specs[1])
    assert compiler.compiled == 4


def test_a_matcher_follows_its_grammar_and_says_when_it_is_done(tokenizer: Tokenizer) -> None:
    compiler = _compiler(tokenizer)
    spec = GrammarSpec("lark", 'start: "fox" | "dog"')
    first, second = compiler.matcher(spec), compiler.matcher(spec)  # independent copies
    ids = tokenizer.encode("fox", add_special_tokens=False)
    for token in ids:
        assert not first.done and first.accept(token)
    assert first.done and first.accepting
    assert not second.done
    assert not second.accept(tokenizer.encode("cat", add_special_tokens=False)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masks_leave_only_allowed_tokens(tokenizer: Tokenizer, dtype: torch.dtype) -> None:
    compiler = _compiler(tokenizer)
    spec = GrammarSpec("lark", 'start: "fox" | "dog"')
    masks = TokenMasks(VOCAB)
    logits = torch.randn(2, VOCAB).to(dtype)
    matchers = [compiler.matcher(spec), compiler.matcher(spec)]
    matchers[1].accept(tokenizer.encode("fox", add_special_tokens=False)[0])
    original = logits.clone()
    copy = masks.masked(logits, matchers)
    assert torch.equal(logits, original)  # a copy: the input is untouched
    masks.apply(logits, matchers)
    assert torch.equal(copy, logits)
    allowed = [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in logits]
    fox, dog = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("fox", "dog"))
    assert {fox, dog} <= allowed[0] and all(t < 500 for t in allowed[0])
    assert fox not in allowed[1] and allowed[1]
    finite = torch.isfinite(copy)
    assert torch.equal(copy[finite], original[finite])  # allowed tokens keep their logits


def test_prefetched_masks_are_the_ones_computed_on_the_spot(tokenizer: Tokenizer) -> None:
    compiler = _compiler(tokenizer)
    spec = GrammarSpec("lark", 'start: "fox" | "dog" | "cat"')
    matchers = [compiler.matcher(spec) for _ in range(3)]
    matchers[1].accept(tokenizer.encode("fox", add_special_tokens=False)[0])
    logits = torch.randn(2, VOCAB)
    subset = [matchers[2], matchers[1]]  # a subset, in another order (e.g. the greedy rows)
    expected = TokenMasks(VOCAB).masked(logits, subset)
    masks = TokenMasks(VOCAB)
    masks.prefetch(matchers)
    assert torch.equal(masks.masked(logits, subset), expected)
    masks.forget()
    matchers[2].accept(tokenizer.encode("dog", add_special_tokens=False)[0])  # it moved: not stale
    assert not torch.equal(masks.masked(logits, subset), expected)


def test_closing_the_masks_stops_their_thread(tokenizer: Tokenizer) -> None:
    # Threads compared by identity: an earlier test's masks, never closed, may end their thread
    # (when collected) at any moment, so a count of threads by name would race with them.
    def mask_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("grammar-masks")}

    before = mask_threads()
    masks = TokenMasks(VOCAB)
    masks.prefetch([_compiler(tokenizer).matcher(GrammarSpec("lark", 'start: "fox"'))])
    started = mask_threads() - before
    assert len(started) == 1
    masks.close()
    assert not started.pop().is_alive()
    masks.close()  # twice is harmless
