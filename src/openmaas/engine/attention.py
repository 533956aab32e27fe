"""Paged attention in plain PyTorch: write new keys/values into the block cache and attend over it.

Each layer's cache is one [slots, 2, kv_heads, d] tensor (a slot's keys, then its values), so a step
writes a layer's new keys and values with one copy and reads a context's with one gather.

`AttentionMetadata` is built once per step by the model runner and shared by every layer. The batch
is laid out decode tokens first (one per sequence), then prefill chunks. Decode tokens are attended
together: their context is gathered from the cache into one padded batch and the query heads that
share a KV head are folded into the query-length axis, so one SDPA call serves the whole batch
without repeating KV heads. Each prefill chunk gets its own causal SDPA call. Device-agnostic: only
`scaled_dot_product_attention`, so it runs on CPU and CUDA alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from openmaas.engine.kernels import CpuKernels


@dataclass
class PrefillChunk:
    start: int  # first row of this chunk in the flattened batch
    length: int  # query tokens in the chunk
    # Slots of the whole context (cached prefix + this chunk) and the query/key mask; both None when
    # the chunk starts at position 0, where the fresh keys and a plain causal mask suffice.
    context_slots: torch.Tensor | None = None
    mask: torch.Tensor | None = None


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [num_tokens] cache slot each new token's K/V goes to
    num_decode: int = 0
    decode_slots: torch.Tensor | None = None  # [num_decode, max_context] (padded with slot 0)
    decode_mask: torch.Tensor | None = None  # [num_decode, 1, 1, max_context] bool, None if no padding
    decode_lengths: torch.Tensor | None = None  # [num_decode] int64 context length of each
    prefills: list[PrefillChunk] = field(default_factory=list)


def paged_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    kernels: CpuKernels | None = None,
) -> torch.Tensor:
    """q: [N, heads, d]; kv: [N, 2, kv_heads, d] (keys, values); kv_cache: [slots, 2, kv_heads, d].
    With `kernels` (our CPU kernels), decode tokens read their context in place instead.

    Returns [N, heads, d]."""
    kv_cache.index_copy_(0, meta.slot_mapping, kv)
    n, num_heads, d = q.shape
    kv_heads = kv.shape[2]
    group = num_heads // kv_heads
    nd = meta.num_decode
    decoded = None
    if nd and kernels is not None:
        assert meta.decode_slots is not None and meta.decode_lengths is not None
        decoded = kernels.decode_attention(q[:nd], kv_cache, meta.decode_slots, meta.decode_lengths, scale)
        if nd == n:
            return decoded
    elif nd:
        assert meta.decode_slots is not None
        # index_select on flat slots: advanced indexing takes a much slower parallel path on CPU.
        ctx = meta.decode_slots.shape[1]
        context = kv_cache.index_select(0, meta.decode_slots.view(-1)).view(nd, ctx, 2, kv_heads, d)
        keys = context[:, :, 0].transpose(1, 2)  # [nd, kv_heads, ctx, d]
        values = context[:, :, 1].transpose(1, 2)
        queries = q[:nd].unflatten(1, (kv_heads, group))
        o = F.scaled_dot_product_attention(queries, keys, values, attn_mask=meta.decode_mask, scale=scale)
        decoded = o.reshape(nd, num_heads, d)
        if nd == n:  # a decode-only step: no prefill rows to place beside it
            return decoded
    out = torch.empty_like(q)
    if decoded is not None:
        out[:nd] = decoded
    for chunk in meta.prefills:
        rows = slice(chunk.start, chunk.start + chunk.length)
        queries = q[rows].transpose(0, 1)  # [heads, T, d]
        context = kv[rows] if chunk.context_slots is None else kv_cache.index_select(0, chunk.context_slots)
        keys = context[:, 0].transpose(0, 1)
        values = context[:, 1].transpose(0, 1)
        if group > 1:
            keys = keys.repeat_interleave(group, dim=0)
            values = values.repeat_interleave(group, dim=0)
        # As [1, heads, T, d]: PyTorch's fused CPU attention (flash) takes 4-D inputs only; 3-D ones ran
        # its unfused math path, 7-15x slower at 1,024 tokens (over half of a 1,024-token prefill's time).
        o = F.scaled_dot_product_attention(
            queries[None],
            keys[None],
            values[None],
            attn_mask=chunk.mask,
            is_causal=chunk.mask is None,
            scale=scale,
        )[0]
        out[rows] = o.transpose(0, 1)
    return out
