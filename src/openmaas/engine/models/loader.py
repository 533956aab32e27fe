"""Load a Hugging Face Llama/Qwen2 folder (config.json + *.safetensors) into our model.

Hugging Face checkpoints keep q/k/v and gate/up as separate matrices; we copy them into the slices of
our fused ones. Only safetensors are read: never pickles.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from openmaas.engine.models import gguf
from openmaas.engine.models.config import ModelConfig
from openmaas.engine.models.llama import LlamaForCausalLM, RotaryEmbedding

# Hugging Face name suffix -> (our parameter suffix, which shard of the fused matrix).
_FUSED = {
    "self_attn.q_proj": ("self_attn.qkv_proj", 0),
    "self_attn.k_proj": ("self_attn.qkv_proj", 1),
    "self_attn.v_proj": ("self_attn.qkv_proj", 2),
    "mlp.gate_proj": ("mlp.gate_up_proj", 0),
    "mlp.up_proj": ("mlp.gate_up_proj", 1),
}


def _shard_bounds(config: ModelConfig, fused: str, shard: int) -> tuple[int, int]:
    if fused.endswith("qkv_proj"):
        q = config.num_attention_heads * config.head_dim
        kv = config.num_key_value_heads * config.head_dim
        starts = [0, q, q + kv, q + 2 * kv]
        return starts[shard], starts[shard + 1]
    inter = config.intermediate_size
    return shard * inter, (shard + 1) * inter


def _target_name(config: ModelConfig, hf_name: str) -> tuple[str, tuple[int, int] | None] | None:
    name = hf_name.removeprefix("model.")
    if name.startswith("lm_head.") and config.tie_word_embeddings:
        return None
    for hf_part, (ours, shard) in _FUSED.items():
        if f".{hf_part}." in f".{name}":
            return name.replace(hf_part, ours), _shard_bounds(config, ours, shard)
    return name, None


def load_model(
    path: str | Path, dtype: torch.dtype, device: torch.device, max_positions: int
) -> LlamaForCausalLM:
    folder = Path(path)
    if gguf.find_file(folder) is not None:
        return gguf.load_model(folder, dtype, device, max_positions)
    config = ModelConfig.from_pretrained(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder}")
    with torch.device("meta"):
        model = LlamaForCausalLM(config, max_positions)
    model.to_empty(device=device)
    model.to(dtype)
    # RoPE tables stay fp32 (as in transformers) and are cast per use.
    model.rotary = RotaryEmbedding(config, max_positions).to(device)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for hf_name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                target = _target_name(config, hf_name)
                if target is None:
                    continue
                name, bounds = target
                if name not in params:
                    raise ValueError(f"unexpected weight {hf_name!r} in {file.name}")
                tensor = f.get_tensor(hf_name)
                param = params[name].data
                dest = param if bounds is None else param[bounds[0] : bounds[1]]
                dest.copy_(tensor.to(dtype))
                loaded.add(name if bounds is None else f"{name}[{bounds[0]}:{bounds[1]}]")
    missing = {n for n in params if n not in loaded and not any(k.startswith(n + "[") for k in loaded)}
    if missing:
        raise ValueError(f"checkpoint {folder} lacks weights: {sorted(missing)[:5]}")
    return model.eval()
