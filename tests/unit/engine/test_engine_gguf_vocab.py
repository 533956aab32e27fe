"""A GGUF file's byte-level BPE vocabulary, rebuilt as a tokenizer, encodes and decodes as the
tokenizer.json it came from, for each pre-tokenizer we support (Qwen2's and Llama 3's regex splits)."""

from __future__ import annotations

import json

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from openmaas.engine.models import gguf_vocab
from openmaas.engine.models.gguf_vocab import PRE_TOKENIZERS, Vocab, VocabError

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog. I'll say it's 12345 or 3.14!",
    "Héllo wörld — naïve café, 東京タワー, 😀 emoji, ünïcödé and Ελληνικά text.\n\n  indented\tcode()",
    "def main():\n    return {'a': [1, 2, 3]}  # comment\r\nWE'RE DONE, THEY'LL SEE",
] * 30
TEXTS = [
    "The quick brown fox.",
    "Héllo wörld — naïve café, 東京, 😀",
    "caf\u0065\u0301 decomposed",  # NFC folds this for Qwen2
    "    four spaces\n\n\ttab\r\n",
    "I'LL say 1234567 isn't 3..3",
    "<|im_start|>user\nhi<|im_end|><|endoftext|>",
]


def _original(pre: str) -> Tokenizer:
    """A tokenizer.json as the model's authors ship it for this pre-tokenizer."""
    split = PRE_TOKENIZERS[pre].split
    assert split is not None
    tok = Tokenizer(models.BPE(ignore_merges=PRE_TOKENIZERS[pre].ignore_merges))
    if pre == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    if pre == "llama-bpe":
        tok.post_processor = processors.TemplateProcessing(
            single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
        )
    return tok


def _vocab(tok: Tokenizer, pre: str) -> Vocab:
    """What llama.cpp's converter stores of it (`_set_vocab_gpt2`)."""
    model = json.loads(tok.to_str())["model"]
    by_id = {index: token for token, index in model["vocab"].items()}
    tokens = [by_id[i] for i in range(len(by_id))]
    types = [3 if token in SPECIALS else 1 for token in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return Vocab("gpt2", pre, tokens, types, merges, bos_id=0, eos_id=2, add_bos=pre == "llama-bpe")


@pytest.mark.parametrize("pre", ["qwen2", "llama-bpe"])
def test_rebuilt_tokenizer_encodes_and_decodes_as_the_original(pre: str) -> None:
    original = _original(pre)
    rebuilt = gguf_vocab.build_tokenizer(_vocab(original, pre))
    for text in TEXTS:
        ids = original.encode(text).ids
        assert rebuilt.encode(text).ids == ids, text
        assert rebuilt.decode(ids) == original.decode(ids)
        assert rebuilt.decode(ids, skip_special_tokens=False) == original.decode(
            ids, skip_special_tokens=False
        )
    assert (rebuilt.encode("hi").ids[0] == 0) == (pre == "llama-bpe")  # Llama 3 adds its bos


def test_tokenizer_config_names_the_special_tokens() -> None:
    vocab = Vocab(
        "gpt2", "gpt2", [*SPECIALS, "a"], [3, 3, 3, 1], [], bos_id=0, eos_id=2, chat_template="{{ x }}"
    )
    config = gguf_vocab.tokenizer_config(vocab)
    assert (config["bos_token"], config["eos_token"], config["chat_template"]) == (
        SPECIALS[0],
        SPECIALS[2],
        "{{ x }}",
    )


@pytest.mark.parametrize(
    ("vocab", "field"),
    [
        (Vocab("llama", None, ["a"], [1], []), "tokenizer.ggml.model"),
        (Vocab("gpt2", "falcon", ["a"], [1], []), "tokenizer.ggml.pre"),
        (Vocab("gpt2", "gpt-2", ["a", "b"], [1, 1], ["a c"]), "tokenizer.ggml.merges"),
        (Vocab("gpt2", "gpt-2", ["a"], [1], [], bos_id=7, add_bos=True), "tokenizer.ggml.bos_token_id"),
    ],
)
def test_vocabularies_we_cannot_rebuild_are_refused_naming_the_key(vocab: Vocab, field: str) -> None:
    with pytest.raises(VocabError) as refused:
        gguf_vocab.build_tokenizer(vocab)
    assert refused.value.field == field
