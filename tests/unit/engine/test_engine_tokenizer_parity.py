"""Prompts are encoded exactly as `transformers`' AutoTokenizer encodes them, also when the folder's
tokenizer.json stores padding and truncation (every sentence-transformers tokenizer does): a prompt
is never padded to a fixed length nor silently cut, so it is never billed for tokens it lacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer as HFTokenizer

from openmaas.engine.testing import build_tokenizer
from openmaas.engine.tokenizer import Tokenizer

PAD_LENGTH = 128
TRUNCATE_AT = 8
SHORT = "the quick brown"
LONG = "The quick brown fox jumps over the lazy dog, and then over the lazy dog once more."


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer folder whose tokenizer.json pads to 128 and truncates at 8 tokens."""
    path = tmp_path_factory.mktemp("padded-tok")
    build_tokenizer(path)
    stored = HFTokenizer.from_file(str(path / "tokenizer.json"))
    stored.enable_padding(pad_id=0, pad_token="<|endoftext|>", length=PAD_LENGTH)
    stored.enable_truncation(max_length=TRUNCATE_AT)
    stored.save(str(path / "tokenizer.json"))
    return path


def _auto_tokenizer(folder: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(folder))


def _ids(encoded: Any) -> list[int]:
    """transformers 5 answers apply_chat_template(tokenize=True) with a BatchEncoding."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def test_a_prompt_is_neither_padded_nor_truncated(folder: Path) -> None:
    tokenizer = Tokenizer.from_pretrained(folder)
    short, long = tokenizer.encode(SHORT), tokenizer.encode(LONG)
    assert 0 < len(short) < 10
    assert len(long) > TRUNCATE_AT
    assert tokenizer.decode(long) == LONG


@pytest.mark.parametrize("add_special_tokens", [True, False])
@pytest.mark.parametrize("text", [SHORT, LONG, "Héllo 東京 😀", ""])
def test_encode_matches_transformers(folder: Path, text: str, add_special_tokens: bool) -> None:
    reference = _auto_tokenizer(folder)
    ours = Tokenizer.from_pretrained(folder)
    assert ours.encode(text, add_special_tokens=add_special_tokens) == reference.encode(
        text, add_special_tokens=add_special_tokens
    )


def test_chat_prompt_matches_transformers(folder: Path) -> None:
    reference = _auto_tokenizer(folder)
    ours = Tokenizer.from_pretrained(folder)
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": LONG},
    ]
    expected = _ids(reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    assert ours.encode_chat(messages) == expected
    assert len(expected) > TRUNCATE_AT
