"""ModelConfig: the architecture facts the engine needs, read from a Hugging Face `config.json`.

Reads both the transformers 4 spelling (`rope_theta`, `rope_scaling`) and the 5 one
(`rope_parameters`). Only Llama-family decoders are described (Llama, Qwen2, Mistral-style).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_MODEL_TYPES = {"llama", "qwen2", "mistral"}


@dataclass
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] = field(default_factory=dict)
    eos_token_ids: list[int] = field(default_factory=list)
    bos_token_id: int | None = None
    # The dtype the checkpoint was saved in (`torch_dtype`, `dtype` since transformers 5), if named.
    checkpoint_dtype: str | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        model_type = raw.get("model_type", "llama")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unsupported model_type {model_type!r}; supported: {sorted(SUPPORTED_MODEL_TYPES)}"
            )
        heads = raw["num_attention_heads"]
        rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
        attention_bias = bool(raw.get("attention_bias", False))
        eos = raw.get("eos_token_id")
        return cls(
            model_type=model_type,
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            num_hidden_layers=raw["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=raw.get("num_key_value_heads") or heads,
            head_dim=raw.get("head_dim") or raw["hidden_size"] // heads,
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            max_position_embeddings=raw.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            # Qwen2 always has q/k/v biases and none on o_proj; Llama's flag covers all four.
            qkv_bias=model_type == "qwen2" or attention_bias,
            o_bias=model_type != "qwen2" and attention_bias,
            mlp_bias=bool(raw.get("mlp_bias", False)),
            rope_theta=float(theta),
            rope_scaling=rope,
            eos_token_ids=[eos] if isinstance(eos, int) else list(eos or []),
            bos_token_id=raw.get("bos_token_id"),
            checkpoint_dtype=raw.get("dtype") or raw.get("torch_dtype"),
        )

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ModelConfig:
        folder = Path(path)
        config = cls.from_dict(json.loads((folder / "config.json").read_text()))
        generation = folder / "generation_config.json"
        if generation.exists():
            eos = json.loads(generation.read_text()).get("eos_token_id")
            extra = [eos] if isinstance(eos, int) else list(eos or [])
            config.eos_token_ids = list(dict.fromkeys(config.eos_token_ids + extra))
        return config
