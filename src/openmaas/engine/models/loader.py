"""Load a Hugging Face Llama/Qwen2 folder (config.json + *.safetensors) into our model.

Hugging Face checkpoints keep q/k/v and gate/up as separate matrices; we copy them into the slices of
our fused ones. Only safetensors are read: never pickles. With a quantisation, the loaded float weights
of the decoder layers' projections (and the lm_head, see `quantize_model`) are quantised in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from openmaas.engine.kernels import move_to_huge_pages
from openmaas.engine.models import gguf
from openmaas.engine.models.config import ModelConfig
from openmaas.engine.models.linear import Linear, set_quantized, share_dequant_scratch, stage_weight
from openmaas.engine.models.llama import LlamaForCausalLM, empty_model
from openmaas.engine.quant import QuantFormat, quantize

log = logging.getLogger(__name__)

# The projections of each decoder layer that a quantisation covers.
PROJECTIONS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")
# The lm_head's format under either quantisation: int8, as llama.cpp's own Q4_0 files keep the output
# matrix at a higher precision than the layers (Q6_K/Q8_0). On a Qwen2.5-0.5B it is 28% of the weights
# a decode step reads. The embedding stays in float: a step looks up one row of it per token.
LM_HEAD_FORMAT: QuantFormat = "int8"

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
    path: str | Path,
    dtype: torch.dtype,
    device: torch.device,
    max_positions: int,
    quantization: QuantFormat | None = None,
    group_size: int = 32,
    quant_kernels: bool = True,
) -> LlamaForCausalLM:
    folder = Path(path)
    if gguf.find_file(folder) is not None:
        to_quantize = quantization is not None
        model = gguf.load_model(folder, dtype, device, max_positions, quant_kernels, to_quantize)
        return _quantize_gguf(model, quantization, group_size, quant_kernels)
    config = ModelConfig.from_pretrained(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder}")
    model = empty_model(config, max_positions, dtype, device)
    _stage_quantized(model, config, dtype, quantization)
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
                dest.copy_(tensor.to(dest.dtype))
                loaded.add(name if bounds is None else f"{name}[{bounds[0]}:{bounds[1]}]")
    missing = {n for n in params if n not in loaded and not any(k.startswith(n + "[") for k in loaded)}
    if missing:
        raise ValueError(f"checkpoint {folder} lacks weights: {sorted(missing)[:5]}")
    if quantization is not None:
        report = quantize_model(model, quantization, group_size, quant_kernels)
        log.info("quantised %s", report)
    return model.eval()


def _stage_quantized(
    model: LlamaForCausalLM, config: ModelConfig, dtype: torch.dtype, quantization: QuantFormat | None
) -> None:
    """The matrices to be quantised get weights in the checkpoint's dtype where it is narrower than
    `dtype` (a bf16 checkpoint quantised to run in fp32, engine/config.py `choose_dtype`; see
    `stage_weight`). An lm_head tied to the embedding keeps the shared weight."""
    narrow = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(config.checkpoint_dtype or "")
    if quantization is None or narrow is None or narrow.itemsize >= dtype.itemsize:
        return
    targets = [layer.get_submodule(name) for layer in model.layers for name in PROJECTIONS]
    if not config.tie_word_embeddings:
        targets.append(model.lm_head)
    for linear in targets:
        assert isinstance(linear, Linear)
        stage_weight(linear, narrow)


def _quantize_gguf(
    model: LlamaForCausalLM, quantization: QuantFormat | None, group_size: int, kernels: bool
) -> LlamaForCausalLM:
    """A GGUF file's model, quantised at load where asked and its file holds float matrices (those
    narrower than the model's dtype loaded in their own: gguf.load_model's `to_quantize`)."""
    if quantization is None:
        return model
    if any(m.quantized is not None for m in model.modules() if isinstance(m, Linear)):
        raise ValueError(
            f"this GGUF file already holds quantised weights; serve it without quantization={quantization!r}"
        )
    log.info("quantised %s", quantize_model(model, quantization, group_size, kernels))
    return model


@dataclass(frozen=True)
class QuantReport:
    """What `quantize_model` did, as the engine logs it at start."""

    format: QuantFormat
    group_size: int  # 0: one scale per output channel
    layers: int  # matrices quantised
    float_bytes: int  # their float weights' bytes before
    quantized_bytes: int  # their values and scales after
    freed_bytes: int  # float bytes released (a tied lm_head's matrix stays with the embedding)

    def __str__(self) -> str:
        group = "per output channel" if self.group_size == 0 else f"group size {self.group_size}"
        return (
            f"{self.layers} matrices to {self.format} ({group}; lm_head {LM_HEAD_FORMAT}): "
            f"{self.float_bytes / 1e6:.1f} MB of weights now {self.quantized_bytes / 1e6:.1f} MB "
            f"({(self.float_bytes - self.quantized_bytes) / 1e6:.1f} MB fewer per step, "
            f"{(self.freed_bytes - self.quantized_bytes) / 1e6:.1f} MB less memory)"
        )


@torch.no_grad()
def quantize_model(
    model: LlamaForCausalLM, format: QuantFormat, group_size: int = 32, kernels: bool = True
) -> QuantReport:
    """Quantise every decoder layer's q/k/v, o, gate/up and down projections to `format` and the lm_head
    to `LM_HEAD_FORMAT`, each with one scale per `group_size` inputs (0: per output channel), and give
    them one shared dequantisation scratch (models/linear.py). `kernels` False: no C kernels."""
    dtype = model.embed_tokens.weight.dtype  # the model's (a staged weight may be narrower)
    targets = [(layer.get_submodule(name), format) for layer in model.layers for name in PROJECTIONS]
    targets.append((model.lm_head, LM_HEAD_FORMAT))
    others = [m for m in model.modules() if not isinstance(m, Linear)]
    shared = {id(p) for m in others for p in m.parameters(recurse=False)}
    float_bytes = quantized_bytes = freed_bytes = 0
    placed: list[torch.Tensor] = []
    for linear, fmt in targets:
        assert isinstance(linear, Linear)
        weight = linear.weight
        nbytes = weight.numel() * weight.element_size()
        q = quantize(weight, fmt, group_size or linear.in_features)
        float_bytes += nbytes
        freed_bytes += 0 if id(weight) in shared else nbytes
        quantized_bytes += q.nbytes
        set_quantized(linear, q, kernels, dtype)
        if linear.quant_kernels is not None and linear.quantized is not None:
            placed += [linear.quantized.qweight, linear.quantized.scales]
    # Our kernels stream the values from 2 MiB pages, as gemv.c does the float weights (~20% faster).
    move_to_huge_pages(placed)
    share_dequant_scratch(model)
    return QuantReport(format, group_size, len(targets), float_bytes, quantized_bytes, freed_bytes)
