"""Text preprocessing: a BPE or WordPiece tokenizer trained with `tokenizers` on the training
texts only, then fixed-length token id sequences (padded with id 0, truncated at max_length).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from openmaas.datasets.preprocessing.base import State
from openmaas.datasets.preprocessing.spec import TextSpec
from openmaas.errors import ValidationFailed

PAD, UNK = "[PAD]", "[UNK]"


def _new_tokenizer(spec: TextSpec) -> tuple[Tokenizer, trainers.Trainer]:
    special = [PAD, UNK]
    if spec.tokenizer == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        trainer: trainers.Trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size,
            min_frequency=spec.min_frequency,
            special_tokens=special,
            show_progress=False,
        )
        tokenizer.decoder = decoders.BPEDecoder()
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
        trainer = trainers.WordPieceTrainer(
            vocab_size=spec.vocab_size,
            min_frequency=spec.min_frequency,
            special_tokens=special,
            show_progress=False,
        )
        tokenizer.decoder = decoders.WordPiece()
    steps = [normalizers.NFD(), normalizers.StripAccents()]
    tokenizer.normalizer = normalizers.Sequence(
        [*steps, normalizers.Lowercase()] if spec.lowercase else steps
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer, trainer


class TextPreprocessor:
    kind = "text"

    def __init__(self, tokenizer: Tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = int(tokenizer.token_to_id(PAD) or 0)

    @classmethod
    def fit(cls, texts: Sequence[str], spec: TextSpec) -> TextPreprocessor:
        tokenizer, trainer = _new_tokenizer(spec)
        tokenizer.train_from_iterator((str(text) for text in texts), trainer=trainer, length=len(texts))
        return cls(tokenizer, spec.max_length)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def transform(self, raw: Sequence[Any]) -> torch.Tensor:
        if not raw or not all(isinstance(text, str) for text in raw):
            raise ValidationFailed("inputs must be a non-empty list of strings", param="inputs")
        ids = torch.full((len(raw), self.max_length), self.pad_id, dtype=torch.long)
        for row, encoding in enumerate(self.tokenizer.encode_batch(list(raw))):
            tokens = encoding.ids[: self.max_length]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return ids

    def state(self) -> State:
        meta = {"kind": self.kind, "max_length": self.max_length, "tokenizer": self.tokenizer.to_str()}
        return meta, {}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, torch.Tensor]) -> TextPreprocessor:
        return cls(Tokenizer.from_str(meta["tokenizer"]), int(meta["max_length"]))
