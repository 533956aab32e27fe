"""Our own BERT encoder (BERT, MiniLM, and other `BertModel` checkpoints), loading Hugging Face
safetensors without `transformers`.

Only inference: no dropout, and attention through `scaled_dot_product_attention` with a padding
mask, so one batch can mix sentences of different lengths.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    num_labels: int = 0
    id2label: dict[int, str] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BertConfig:
        if data.get("model_type", "bert") != "bert":
            raise ValueError(f"not a BERT-family config: model_type {data.get('model_type')!r}")
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        architectures = data.get("architectures") or []
        classifies = any("SequenceClassification" in name for name in architectures)
        id2label = {int(k): str(v) for k, v in (data.get("id2label") or {}).items()} if classifies else None
        return cls(
            vocab_size=data["vocab_size"],
            hidden_size=data["hidden_size"],
            num_hidden_layers=data["num_hidden_layers"],
            num_attention_heads=data["num_attention_heads"],
            intermediate_size=data["intermediate_size"],
            max_position_embeddings=data["max_position_embeddings"],
            type_vocab_size=data.get("type_vocab_size", 2),
            layer_norm_eps=data.get("layer_norm_eps", 1e-12),
            hidden_act=data.get("hidden_act", "gelu"),
            num_labels=len(id2label) if id2label else 0,
            id2label=id2label,
        )


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}


class _Layer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        hidden, eps = config.hidden_size, config.layer_norm_eps
        self.heads = config.num_attention_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)
        self.activation = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        shape = (batch, length, self.heads, hidden // self.heads)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        attended = attended.transpose(1, 2).reshape(batch, length, hidden)
        x = self.attention_norm(x + self.attention_out(attended))
        return self.output_norm(x + self.output(self.activation(self.intermediate(x))))


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states, (batch, length, hidden)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        x = self.embedding_norm(x + self.token_type_embeddings(torch.zeros_like(input_ids)))
        # Additive mask: padded keys get -inf, broadcast over heads and query positions.
        mask = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(attention_mask == 0, float("-inf"))[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def classify(self, states: torch.Tensor) -> torch.Tensor:
        """Logits from the [CLS] state through the pooler, as BertForSequenceClassification does."""
        if self.classifier is None:
            raise ValueError("this checkpoint has no classification head")
        return self.classifier(torch.tanh(self.pooler(states[:, 0])))


# Hugging Face parameter names → ours.
_RENAMES = (
    ("embeddings.LayerNorm.", "embedding_norm."),
    ("encoder.layer.", "layers."),
    (".attention.self.", "."),
    (".attention.output.dense.", ".attention_out."),
    (".attention.output.LayerNorm.", ".attention_norm."),
    (".intermediate.dense.", ".intermediate."),
    (".output.dense.", ".output."),
    (".output.LayerNorm.", ".output_norm."),
    ("pooler.dense.", "pooler."),
)


def _rename(name: str) -> str | None:
    if name.startswith("bert."):
        name = name[len("bert.") :]
    if name.endswith("position_ids"):
        return None  # a buffer, not a weight
    if name.startswith("embeddings.") and "LayerNorm" not in name:
        return name[len("embeddings.") :]
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name


def load_bert(folder: Path, dtype: torch.dtype = torch.float32) -> BertEncoder:
    config = BertConfig.from_json(json.loads((folder / "config.json").read_text()))
    model = BertEncoder(config)
    weights = load_file(str(folder / "model.safetensors"))
    state = {new: tensor for name, tensor in weights.items() if (new := _rename(name)) is not None}
    expected = set(model.state_dict())
    if not config.num_labels:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing = expected - set(state)
    if "pooler.weight" in missing and not config.num_labels:
        # Sentence-embedding checkpoints may drop the unused pooler.
        state["pooler.weight"] = model.pooler.weight.detach()
        state["pooler.bias"] = model.pooler.bias.detach()
        missing -= {"pooler.weight", "pooler.bias"}
    unexpected = set(state) - expected
    if missing or unexpected:
        raise ValueError(
            f"weights do not match a BERT encoder: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict(state)
    return model.to(dtype).eval()
