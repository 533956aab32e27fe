"""The tokenizer and chat template of a GGUF file, rebuilt as a Hugging Face `tokenizer.json` and
`tokenizer_config.json` from the file's `tokenizer.*` metadata.

llama.cpp's converter stores a byte-level BPE ("gpt2" model) as its token strings (in the byte-level
alphabet, as tokenizer.json keeps them), its merges, each token's type (control tokens are the
special ones) and the name of the pre-tokenizer (`tokenizer.ggml.pre`), not its regex; the regex
for each supported name is the one the original tokenizer.json carries. SentencePiece ("llama")
vocabularies are refused with an error naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

# gguf.TokenType values (kept here so this module needs no numpy reading of its own).
CONTROL, USER_DEFINED = 3, 4

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class PreTokenizer:
    """How one `tokenizer.ggml.pre` name splits text before BPE: the split regex (None: GPT-2's own,
    built into the byte-level pre-tokenizer), NFC normalisation, and whether a word that is a whole
    token skips the merges (`ignore_merges`, as Llama 3's tokenizer.json says)."""

    split: str | None
    nfc: bool = False
    ignore_merges: bool = False


# llama.cpp's names (src/llama-vocab.cpp); a file that names none is read as GPT-2's.
PRE_TOKENIZERS = {
    "gpt-2": PreTokenizer(None),
    "llama-bpe": PreTokenizer(_LLAMA3_SPLIT, ignore_merges=True),
    "llama3": PreTokenizer(_LLAMA3_SPLIT, ignore_merges=True),
    "llama-v3": PreTokenizer(_LLAMA3_SPLIT, ignore_merges=True),
    "qwen2": PreTokenizer(_QWEN2_SPLIT, nfc=True),
}


# Control tokens that end a generation wherever the vocabulary has them, as llama.cpp decides (its
# end-of-generation set; for Qwen2 <|endoftext|> beside <|im_end|>, as its generation_config.json says).
END_OF_GENERATION = ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "<|end|>")


class VocabError(ValueError):
    """The vocabulary metadata cannot be turned into a tokenizer; `field` names the key;
    `unsupported`: a well-formed vocabulary of a kind we do not rebuild."""

    def __init__(self, message: str, field: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.unsupported = unsupported


@dataclass(frozen=True)
class Vocab:
    """The `tokenizer.*` metadata of a GGUF file, as read from it."""

    model: str
    pre: str | None
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    chat_template: str | None = None


def build_tokenizer(vocab: Vocab) -> Tokenizer:
    """A `tokenizers` tokenizer that encodes and decodes as the model's original one."""
    if vocab.model != "gpt2":
        raise VocabError(
            f"tokenizer model {vocab.model!r} is not supported; GGUF import reads byte-level BPE "
            "vocabularies ('gpt2', as Llama 3 and Qwen2 models have)",
            "tokenizer.ggml.model",
            unsupported=True,
        )
    pre = PRE_TOKENIZERS.get(vocab.pre or "gpt-2")
    if pre is None:
        raise VocabError(
            f"pre-tokenizer {vocab.pre!r} is not supported; supported: {sorted(PRE_TOKENIZERS)}",
            "tokenizer.ggml.pre",
            unsupported=True,
        )
    if len(vocab.token_types) not in (0, len(vocab.tokens)):
        raise VocabError("there is not one token type per token", "tokenizer.ggml.token_type")
    ids = {token: index for index, token in enumerate(vocab.tokens)}
    pairs: list[tuple[str, str]] = []
    for merge in vocab.merges:
        left, space, right = merge.partition(" ")
        if not space or left not in ids or right not in ids:
            raise VocabError(f"merge {merge!r} does not join two tokens", "tokenizer.ggml.merges")
        pairs.append((left, right))
    tok = Tokenizer(models.BPE(vocab=ids, merges=pairs, ignore_merges=pre.ignore_merges))
    if pre.nfc:
        tok.normalizer = normalizers.NFC()
    if pre.split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pre.split), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    added = [
        AddedToken(token, special=kind == CONTROL, normalized=False)
        for token, kind in zip(vocab.tokens, vocab.token_types, strict=False)
        if kind in (CONTROL, USER_DEFINED)
    ]
    tok.add_tokens(added)
    bos = _token(vocab, vocab.bos_id, "tokenizer.ggml.bos_token_id")
    if vocab.add_bos and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A:0", pair=f"{bos} $A:0 {bos} $B:1", special_tokens=[(bos, vocab.bos_id)]
        )
    return tok


def end_of_generation_ids(vocab: Vocab) -> list[int]:
    """The ids a generation stops at: eos, eot, and the control tokens of END_OF_GENERATION."""
    named = [vocab.eos_id, vocab.eot_id]
    named += [
        index
        for index, (token, kind) in enumerate(zip(vocab.tokens, vocab.token_types, strict=False))
        if kind == CONTROL and token in END_OF_GENERATION
    ]
    return [i for i in dict.fromkeys(named) if i is not None]


def tokenizer_config(vocab: Vocab) -> dict[str, Any]:
    """tokenizer_config.json: the special tokens and chat template the engine's Tokenizer reads."""
    eos = vocab.eos_id if vocab.eos_id is not None else vocab.eot_id
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": _token(vocab, vocab.bos_id, "tokenizer.ggml.bos_token_id"),
        "eos_token": _token(vocab, eos, "tokenizer.ggml.eos_token_id"),
        "pad_token": _token(vocab, vocab.pad_id, "tokenizer.ggml.padding_token_id"),
        "add_bos_token": vocab.add_bos,
        "chat_template": vocab.chat_template,
    }


def _token(vocab: Vocab, token_id: int | None, field: str) -> str | None:
    if token_id is None:
        return None
    if not 0 <= token_id < len(vocab.tokens):
        raise VocabError(f"token id {token_id} is not in the vocabulary", field)
    return vocab.tokens[token_id]
