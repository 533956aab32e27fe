"""Sentence embeddings from an imported sentence-transformers folder: tokenise, encode with our
BERT, pool (mean, CLS or max, as its `1_Pooling/config.json` says) and normalise when the folder's
`modules.json` lists a Normalize module."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from openmaas.serving.encoders.bert import BertEncoder, load_bert


@dataclass(frozen=True)
class Embeddings:
    vectors: torch.Tensor  # (batch, dim), float32
    token_counts: list[int]


class SentenceEncoder:
    def __init__(self, folder: Path, *, max_batch_tokens: int = 16_384) -> None:
        self.model: BertEncoder = load_bert(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.max_length = _max_length(folder, self.model.config.max_position_embeddings)
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        self.pooling = _pooling(folder)
        self.normalize = _has_normalize(folder)
        self.max_batch_tokens = max_batch_tokens
        self.dimensions = self.model.config.hidden_size

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(encoding.ids) for encoding in self.tokenizer.encode_batch(texts)]

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> Embeddings:
        encodings = self.tokenizer.encode_batch(texts)
        counts = [len(e.ids) for e in encodings]
        vectors: list[torch.Tensor] = []
        # Sort by length so each sub-batch pads little; restore the order afterwards.
        order = sorted(range(len(texts)), key=lambda i: counts[i])
        start = 0
        while start < len(order):
            longest = counts[order[start]]
            end = start + 1
            while (
                end < len(order)
                and (end - start + 1) * max(longest, counts[order[end]]) <= self.max_batch_tokens
            ):
                longest = max(longest, counts[order[end]])
                end += 1
            vectors.append(self._embed_batch([encodings[i].ids for i in order[start:end]]))
            start = end
        stacked = torch.cat(vectors) if vectors else torch.empty(0, self.dimensions)
        result = torch.empty_like(stacked)
        result[torch.tensor(order, dtype=torch.long)] = stacked
        return Embeddings(result, counts)

    def _embed_batch(self, ids: list[list[int]]) -> torch.Tensor:
        longest = max(len(row) for row in ids)
        input_ids = torch.zeros(len(ids), longest, dtype=torch.long)
        mask = torch.zeros(len(ids), longest, dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        states = self.model(input_ids, mask)
        pooled = _pool(states, mask, self.pooling)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


def _pool(states: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "cls":
        return states[:, 0]
    weights = mask.unsqueeze(-1).to(states.dtype)
    if mode == "max":
        return states.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _pooling(folder: Path) -> str:
    config_path = folder / "1_Pooling" / "config.json"
    if not config_path.exists():
        return "mean"
    config = json.loads(config_path.read_text())
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_max_tokens"):
        return "max"
    return "mean"


def _has_normalize(folder: Path) -> bool:
    modules_path = folder / "modules.json"
    if not modules_path.exists():
        return False
    return any(str(m.get("type", "")).endswith("Normalize") for m in json.loads(modules_path.read_text()))


def _max_length(folder: Path, positions: int) -> int:
    config_path = folder / "sentence_bert_config.json"
    if config_path.exists():
        return min(positions, int(json.loads(config_path.read_text()).get("max_seq_length", positions)))
    return positions
