"""Tokenizer, chat template and streaming detokenisation (multi-byte characters, stop strings)."""

from __future__ import annotations

import pytest

from openmaas.engine.detokenizer import IncrementalDetokenizer
from openmaas.engine.testing import build_tokenizer
from openmaas.engine.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    folder = tmp_path_factory.mktemp("tok")
    build_tokenizer(folder)
    return Tokenizer.from_pretrained(folder)


def test_chat_template_renders_chatml_with_generation_prompt(tokenizer: Tokenizer) -> None:
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.encode_chat([{"role": "user", "content": "Hi"}])
    assert ids[0] == 1 and tokenizer.eos_token_id == 2


def test_streamed_text_never_splits_a_multibyte_character(tokenizer: Tokenizer) -> None:
    text = "Héllo 東京 😀 wörld"
    ids = tokenizer.encode(text)
    detok = IncrementalDetokenizer(tokenizer, [5], stop=[])
    deltas = []
    for t in ids:
        detok.add_token(t)
        deltas.append(detok.take_delta(finished=False))
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text
    # Byte-level tokens of an emoji arrive one at a time yet come out whole.
    assert any(d.endswith("😀") or d == "😀" or "😀" in d for d in deltas)


def test_stop_string_is_held_back_then_cut(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("The quick brown fox jumps")
    detok = IncrementalDetokenizer(tokenizer, [5], stop=["brown"])
    sent, hit = "", None
    for t in ids:
        hit = detok.add_token(t)
        sent += detok.take_delta(finished=hit is not None)
        assert "b" not in sent.replace("The quick ", "")  # nothing of the stop string leaks
        if hit:
            break
    assert hit == "brown"
    assert sent == detok.text == "The quick "


def test_flush_at_the_end_releases_an_incomplete_character(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("€")  # three UTF-8 bytes the tiny vocabulary never merged into one token
    assert len(ids) > 1
    detok = IncrementalDetokenizer(tokenizer, [5], stop=[])
    for t in ids[:-1]:
        detok.add_token(t)
    assert detok.take_delta(finished=False) == ""
    detok.flush()
    assert detok.take_delta(finished=True).endswith("\ufffd")
    assert tokenizer.token_text(2) == "<|im_end|>"
