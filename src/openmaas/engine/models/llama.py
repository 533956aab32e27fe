"""Our Llama-family decoder (Llama, Qwen2, Mistral-style) running against the paged KV cache.

q/k/v and gate/up projections are fused into one matrix each, so a decode step reads each layer's
weights in two large matmuls instead of five. Qwen2 is this model with q/k/v biases (`qkv_bias`).
The numerics follow `transformers` (fp32 RMSNorm, rotate-half RoPE) so greedy output matches it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openmaas.engine.attention import AttentionMetadata, paged_attention
from openmaas.engine.kernels import (
    CpuKernels,
    DecodeStep,
    LayerParams,
    LayerShape,
    QuantLayerParams,
    data_ptr_or_none,
    load_kernels,
    move_to_huge_pages,
    quant_projection,
)
from openmaas.engine.lora import LoraBatch
from openmaas.engine.models.config import ModelConfig
from openmaas.engine.models.linear import Linear, decode_step


@dataclass
class Rope:
    """One step's rotary tables: `cos`/`sin_signed` per token ([N, 1, d], model dtype) for PyTorch's
    ops, or None where our kernel rotates from the fp32 `table_cos`/`table_sin` by `positions`."""

    positions: torch.Tensor
    table_cos: torch.Tensor
    table_sin: torch.Tensor
    cos: torch.Tensor | None = None
    sin_signed: torch.Tensor | None = None


class RMSNorm(nn.Module):
    kernels: CpuKernels | None = None

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)

    def add(self, h: torch.Tensor, delta: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(h + delta, norm(h + delta)): the residual add fused into the norm. Our kernel adds into h in
        place (h is the residual stream the model owns)."""
        if self.kernels is not None:
            return h, self.kernels.add_rmsnorm(h, delta, self.weight, self.eps)
        if delta is not None:
            h = h + delta
        return h, self(h)


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    scaling = config.rope_scaling
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / scaling["factor"]
    if rope_type == "freq_factors":  # a GGUF's rope_freqs tensor: one divisor per frequency
        return inv_freq / torch.tensor(scaling["factors"], dtype=torch.float32)
    if rope_type == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f"unsupported rope_type {rope_type!r}")


class RotaryEmbedding(nn.Module):
    """RoPE tables: `cos` and `sin_signed` ([max_positions, d], fp32 as in transformers).

    transformers rotates as `x * cos + rotate_half(x) * sin` with `rotate_half(x) = [-x2, x1]`. We
    keep the sign in the table (`[-sin, sin]`) and swap the halves with one `flip`, which gives the
    same values bit for bit in fewer ops.
    """

    def __init__(self, config: ModelConfig, max_positions: int) -> None:
        super().__init__()
        freqs = torch.arange(max_positions, dtype=torch.float32)[:, None] * rope_inv_freq(config)[None, :]
        self.cos: torch.Tensor
        self.sin_signed: torch.Tensor
        self.register_buffer("cos", torch.cat((freqs, freqs), dim=-1).cos(), persistent=False)
        self.register_buffer("sin_signed", torch.cat((-freqs.sin(), freqs.sin()), dim=-1), persistent=False)

    def tables(self, positions: torch.Tensor, dtype: torch.dtype, gather: bool = True) -> Rope:
        """The step's rotary tables; with `gather`, each token's (cos, sin_signed) as [N, 1, d] in
        `dtype`, gathered once per step and used by every layer."""
        rope = Rope(positions, self.cos, self.sin_signed)
        if gather:
            rope.cos = self.cos.index_select(0, positions).to(dtype).unsqueeze(1)
            rope.sin_signed = self.sin_signed.index_select(0, positions).to(dtype).unsqueeze(1)
        return rope


def rotate_(x: torch.Tensor, rope: Rope, kernels: CpuKernels | None = None) -> None:
    """Rotate x ([N, heads, d], last dim contiguous) in place by its tokens' positions."""
    if kernels is not None:
        kernels.rope(x, rope.positions, rope.table_cos, rope.table_sin)
        return
    cos, sin_signed = rope.cos, rope.sin_signed
    assert cos is not None and sin_signed is not None
    n, heads, d = x.shape
    swapped = x.unflatten(-1, (2, d // 2)).flip(-2).view(n, heads, d)
    torch.add(x * cos, swapped * sin_signed, out=x)


class Attention(nn.Module):
    kernels: CpuKernels | None = None  # RoPE, and decode attention where `kernels.fits_attention`
    decode_kernels: CpuKernels | None = None

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = Linear(config.hidden_size, self.q_size + 2 * kv_size, bias=config.qkv_bias)
        self.o_proj = Linear(self.q_size, config.hidden_size, bias=config.o_bias)

    def forward(
        self, x: torch.Tensor, rope: Rope, kv_cache: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        n, heads, kv_heads = x.shape[0], self.num_heads, self.num_kv_heads
        # One [N, heads + 2 * kv_heads, d] tensor: q and k are rotated in it in place, and its k/v
        # heads are exactly one cache row each ([2, kv_heads, d]), written with one copy.
        # contiguous: a projection may return a transposed view (the dequantising path), and RoPE's kernel
        # takes each token's heads contiguous.
        qkv = self.qkv_proj(x).reshape(n, heads + 2 * kv_heads, self.head_dim).contiguous()
        rotate_(qkv[:, : heads + kv_heads], rope, self.kernels)
        kv = qkv[:, heads:].unflatten(1, (2, kv_heads))
        o = paged_attention(qkv[:, :heads], kv, kv_cache, meta, self.scale, self.decode_kernels)
        return self.o_proj(o.reshape(n, self.q_size))


class MLP(nn.Module):
    kernels: CpuKernels | None = None

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernels is not None:
            return self.down_proj(self.kernels.silu_mul(self.gate_up_proj(x)))
        gate, up = self.gate_up_proj(x).split(self.intermediate_size, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        h: torch.Tensor,
        delta: torch.Tensor | None,
        rope: Rope,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(residual stream, this layer's MLP output): the previous layer's output `delta` is added to
        `h` by this layer's first norm, and this layer's MLP output by the next one's (or the final
        norm), so each residual add rides along with a norm."""
        h, x = self.input_layernorm.add(h, delta)
        h, x = self.post_attention_layernorm.add(h, self.self_attn(x, rope, kv_cache, meta))
        return h, self.mlp(x)


class LlamaForCausalLM(nn.Module):
    # Set by enable_cpu_kernels: each layer's parameters for our one-call decode layer (layer.c), of
    # float weights (`LayerParams`) or of quantised ones (`QuantLayerParams`).
    fused_layers: list[LayerParams] | list[QuantLayerParams] | None = None
    fused_shape: LayerShape | None = None
    # This step's adapter rows (engine/lora.py), set when the engine serves adapters.
    lora_batch: LoraBatch | None = None

    def __init__(self, config: ModelConfig, max_positions: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config, max_positions or config.max_position_embeddings)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """Hidden states [N, hidden] for the flattened batch of new tokens.

        `kv_caches` holds one [slots, 2, kv_heads, d] tensor per layer (keys at 0, values at 1)."""
        h = self.embed_tokens(input_ids)
        if self._fused_decode(h.shape[0], meta):
            return self._decode_fused(h, positions, kv_caches, meta)
        rope = self.rotary.tables(positions, h.dtype, gather=self.norm.kernels is None)
        delta: torch.Tensor | None = None
        with decode_step(meta.num_decode == h.shape[0]):
            for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
                h, delta = layer(h, delta, rope, kv_cache, meta)
        return self.norm.add(h, delta)[1]

    def _fused_decode(self, rows: int, meta: AttentionMetadata) -> bool:
        """A decode-only step whose matmuls all take our kernel runs each layer in one call."""
        kernels, shape = self.norm.kernels, self.fused_shape
        if kernels is None or shape is None or meta.num_decode != rows:
            return False
        if self.lora_batch is not None and self.lora_batch.active:
            return False  # adapter rows: the per-op path, whose projections add their deltas
        if self.fused_layers and isinstance(self.fused_layers[0], QuantLayerParams):
            return 1 <= rows <= kernels.max_rows  # quant512.c takes any width
        widths = (shape.hidden, shape.heads * shape.head_dim, shape.intermediate)
        return all(kernels.fits_rows(rows, width) for width in widths)

    def _decode_fused(
        self, h: torch.Tensor, positions: torch.Tensor, kv_caches: list[torch.Tensor], meta: AttentionMetadata
    ) -> torch.Tensor:
        kernels, shape, layers = self.norm.kernels, self.fused_shape, self.fused_layers
        assert kernels is not None and shape is not None and layers is not None
        assert meta.decode_slots is not None and meta.decode_lengths is not None
        delta: torch.Tensor | None = None
        step = DecodeStep(
            meta.slot_mapping, meta.decode_slots, meta.decode_lengths, positions, self.rotary.cos,
            self.rotary.sin_signed,
        )  # fmt: skip
        if isinstance(layers[0], QuantLayerParams):
            qscratch = kernels.qlayer_scratch(shape, h.shape[0])
            for qparams, kv_cache in zip(layers, kv_caches, strict=True):
                assert isinstance(qparams, QuantLayerParams)
                delta = kernels.decode_qlayer(qparams, shape, h, delta, kv_cache, step, qscratch)
            return self.norm.add(h, delta)[1]
        scratch = kernels.layer_scratch(shape, h.shape[0])
        for params, kv_cache in zip(layers, kv_caches, strict=True):
            assert isinstance(params, LayerParams)
            delta = kernels.decode_layer(params, shape, h, delta, kv_cache, step, scratch)
        return self.norm.add(h, delta)[1]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # The logits feed no KV cache and quant512.c computes each row as it would alone: a quantised
        # lm_head takes it for up to 16 rows (the sampled rows of a step) in prefill too.
        with decode_step():
            return self.lm_head(hidden)


def empty_model(
    config: ModelConfig, max_positions: int, dtype: torch.dtype, device: torch.device
) -> LlamaForCausalLM:
    """The model for `config` with uninitialised weights in `dtype` on `device`, for a loader to fill
    (RoPE tables stay fp32, as in transformers, and are cast per use; a tied lm_head is the embedding)."""
    with torch.device("meta"):
        model = LlamaForCausalLM(config, max_positions)
    model.to_empty(device=device)
    model.to(dtype)
    model.rotary = RotaryEmbedding(config, max_positions).to(device)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    return model


def enable_cpu_kernels(model: LlamaForCausalLM, dtype: torch.dtype) -> CpuKernels | None:
    """Run the model's decode-step work through our C kernels (openmaas.engine.kernels): 1-4 row
    matmuls on plain weights moved onto huge pages (and on quantised weights, where the library has
    quant512.c), RMSNorm with its residual add, RoPE, the SiLU gate and decode attention, and whole
    decode layers in one call where every layer's projections are all float or all quantised. Returns
    them, or None where they are not available here. Call before `enable_onednn_matmul`, which must
    then keep the plain weights."""
    kernels = load_kernels(dtype)
    if kernels is None:
        return None
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    move_to_huge_pages(m.weight for m in linears if m.quantized is None)
    for m in model.modules():
        if isinstance(m, Linear | RMSNorm | Attention | MLP):
            m.kernels = kernels
        if isinstance(m, Attention) and kernels.fits_attention(m.num_heads, m.num_kv_heads, m.head_dim):
            m.decode_kernels = kernels
    layers = [layer for layer in model.layers if isinstance(layer, DecoderLayer)]
    # layer.c runs a layer of float weights, or one whose four projections are all quantised (with
    # quant512.c); a model that mixes the two within its layers runs its decode steps op by op.
    projections = [m for layer in layers for m in _projections(layer)]
    plain = all(m.quantized is None for m in projections)
    quantized = kernels.quantized and all(m.quantized is not None for m in projections)
    fusable = len(layers) == len(model.layers) and all(layer.self_attn.decode_kernels for layer in layers)
    if fusable and (plain or quantized):
        model.fused_layers = [_layer_params(layer) for layer in layers] if plain else [
            _quant_layer_params(layer) for layer in layers
        ]  # fmt: skip
        config = model.config
        model.fused_shape = LayerShape(
            config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim,
            config.intermediate_size, config.rms_norm_eps, layers[0].self_attn.scale,
        )  # fmt: skip
    return kernels


def _layer_params(layer: DecoderLayer) -> LayerParams:
    """Pointers to the layer's parameters, which stay where they are for the model's life (the plain
    weights were moved onto huge pages once, and are never replaced)."""
    ptr = data_ptr_or_none
    attn, mlp = layer.self_attn, layer.mlp
    return LayerParams(
        ptr(layer.input_layernorm.weight), ptr(attn.qkv_proj.weight), ptr(attn.qkv_proj.bias),
        ptr(attn.o_proj.weight), ptr(attn.o_proj.bias), ptr(layer.post_attention_layernorm.weight),
        ptr(mlp.gate_up_proj.weight), ptr(mlp.gate_up_proj.bias), ptr(mlp.down_proj.weight),
        ptr(mlp.down_proj.bias),
    )  # fmt: skip


def _projections(layer: DecoderLayer) -> list[Linear]:
    attn, mlp = layer.self_attn, layer.mlp
    return [attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj]


def _quant_layer_params(layer: DecoderLayer) -> QuantLayerParams:
    """Pointers to a layer's norms and quantised projections (which, like the float weights, stay where
    they are for the model's life)."""
    params = QuantLayerParams(
        data_ptr_or_none(layer.input_layernorm.weight),
        data_ptr_or_none(layer.post_attention_layernorm.weight),
    )
    for name, proj in zip(("qkv", "o", "gate_up", "down"), _projections(layer), strict=True):
        assert proj.quantized is not None
        setattr(params, name, quant_projection(proj.quantized, proj.bias))
    return params
