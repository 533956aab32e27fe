"""ModelRunner: owns the model and its paged KV cache, and executes one scheduled step.

It turns the scheduler's decision into flat tensors (token ids, positions, cache slots, attention
metadata), runs the model once, and returns the logits of the positions that sample. It never
decides what to run and never samples. Device-agnostic: the same code runs on CPU and CUDA.
"""

from __future__ import annotations

import logging
import os

import torch

from openmaas.engine.attention import AttentionMetadata, PrefillChunk
from openmaas.engine.config import EngineConfig
from openmaas.engine.kernels import CpuKernels
from openmaas.engine.lora import AdapterSlots
from openmaas.engine.models.config import ModelConfig
from openmaas.engine.models.linear import (
    Linear,
    cpu_has_fast_half,
    enable_fp32_batched_matmul,
    enable_onednn_matmul,
    onednn_available,
)
from openmaas.engine.models.llama import LlamaForCausalLM, enable_cpu_kernels
from openmaas.engine.models.loader import load_model
from openmaas.engine.scheduler import ScheduledSequence
from openmaas.engine.sequence import Sequence

log = logging.getLogger(__name__)


def kv_block_bytes(model_config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    per_token = 2 * model_config.num_key_value_heads * model_config.head_dim * dtype.itemsize
    return per_token * model_config.num_hidden_layers * block_size


class ModelRunner:
    def __init__(self, config: EngineConfig, model_config: ModelConfig, max_model_len: int) -> None:
        self.config = config
        self.device = config.torch_device
        choice = config.choose_dtype(model_config.checkpoint_dtype, cpu_computes=cpu_has_fast_half)
        self.dtype = choice.dtype
        self.dtype_reason = choice.reason
        log.info("engine for %s runs in %s (%s)", config.model, str(self.dtype)[6:], choice.reason)
        self.block_size = config.block_size
        self.model: LlamaForCausalLM = load_model(
            config.model, self.dtype, self.device, max_model_len,
            config.quantization, config.quantization_group_size, config.cpu_kernels,
        )  # fmt: skip
        half = self.dtype in (torch.bfloat16, torch.float16)
        # Our C kernels for decode steps (openmaas.engine.kernels), None where not in use.
        self.kernels: CpuKernels | None = None
        if self.device.type == "cpu" and half and not cpu_has_fast_half(self.dtype):
            enable_fp32_batched_matmul(self.model)
        else:
            if self.device.type == "cpu" and config.cpu_kernels:
                self.kernels = enable_cpu_kernels(self.model, self.dtype)
            if config.cpu_onednn and onednn_available(self.device) and self._onednn_copy_fits():
                enable_onednn_matmul(self.model, keep_plain=self.kernels is not None)
        # LoRA adapters served per row (engine/lora.py); None when the engine serves none.
        self.adapters: AdapterSlots | None = None
        if config.max_loras:
            mc = model_config
            q, kv = mc.num_attention_heads * mc.head_dim, mc.num_key_value_heads * mc.head_dim
            sizes = {
                "qkv_proj": [q, kv, kv],
                "o_proj": [mc.hidden_size],
                "gate_up_proj": [mc.intermediate_size, mc.intermediate_size],
                "down_proj": [mc.hidden_size],
            }
            self.adapters = AdapterSlots(self.model, config.max_loras, config.max_lora_rank, sizes)
            self.model.lora_batch = self.adapters.batch
        if config.num_blocks is not None:
            self.num_blocks = config.num_blocks
        else:
            block_bytes = kv_block_bytes(model_config, self.block_size, self.dtype)
            self.num_blocks = max(1, config.kv_cache_memory_bytes // block_bytes)
        slots = self.num_blocks * self.block_size
        shape = (slots, 2, model_config.num_key_value_heads, model_config.head_dim)
        # Allocated once; every step writes into and reads from these same tensors.
        self.kv_caches = [
            torch.zeros(shape, dtype=self.dtype, device=self.device)
            for _ in range(model_config.num_hidden_layers)
        ]

    def _onednn_copy_fits(self) -> bool:
        """With our kernels the plain weights stay, so oneDNN's reordered copy doubles the weights'
        memory. Make it only while both copies stay under half of this machine's memory; past that,
        batches of 5+ rows run PyTorch's matmul on the plain weights (up to ~35% slower at 16 rows,
        within ~5% in prefill)."""
        if self.kernels is None:
            return True
        weights = sum(
            m.weight.numel() * m.weight.element_size() for m in self.model.modules() if isinstance(m, Linear)
        )
        try:
            memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return True
        if 2 * weights <= memory // 2:
            return True
        log.warning(
            "model weights %.1f GB: skipping oneDNN's second copy (%.1f GB of memory); batches of 5+ rows "
            "use PyTorch's matmul",
            weights / 1e9,
            memory / 1e9,
        )
        return False

    def close(self) -> None:
        """Engines call this on shutdown. The runner holds no threads or processes to stop, only
        tensors, which go with it."""

    @torch.inference_mode()
    def execute(
        self, batch: list[ScheduledSequence]
    ) -> tuple[torch.Tensor, list[Sequence], list[ScheduledSequence]]:
        """Run one step. Returns logits, the k sequences that sample one token, whose rows come first
        (row for row), and the items with guesses (speculative decoding), whose 1 + len(draft) rows
        each follow, item after item."""
        # Single-token items first: they share one batched attention call; items with guesses last.
        single = [s for s in batch if s.num_tokens == 1]
        drafted: list[ScheduledSequence] = []
        if len(single) < len(batch):
            drafted = [s for s in batch if s.draft]
            batch = single + [s for s in batch if s.num_tokens > 1 and not s.draft] + drafted
        input_ids, positions, meta, sample_rows = self.prepare(batch)
        if self.adapters is not None:
            self.adapters.set_rows([(s.seq.lora_slot, s.num_tokens) for s in batch], self.device)
        hidden = self.model(input_ids, positions, self.kv_caches, meta)
        if not len(sample_rows):  # only partial prefill chunks: nothing samples this step
            return hidden.new_empty((0, self.model.config.vocab_size)), [], []
        logits = self.model.compute_logits(hidden[sample_rows])
        return logits, [item.seq for item in batch if item.samples and not item.draft], drafted

    def prepare(
        self, batch: list[ScheduledSequence]
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]:
        bs = self.block_size
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        sample_rows: list[int] = []
        decode = [s for s in batch if s.num_tokens == 1]
        prefill_specs: list[tuple[int, int, int, list[int]]] = []
        for item in batch:
            seq, start, n = item.seq, item.seq.num_computed_tokens, item.num_tokens
            row = len(tokens)
            if item.draft:  # the last token, then the guesses: every row samples
                tokens.extend(seq.token_ids[start : start + n - len(item.draft)])
                tokens.extend(item.draft)
                sample_rows.extend(range(row, row + n))
            else:
                tokens.extend(seq.token_ids[start : start + n])
                if item.samples:
                    sample_rows.append(row + n - 1)
            positions.extend(range(start, start + n))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
            if n > 1:
                prefill_specs.append((row, n, start, table))
        dev = self.device
        meta = AttentionMetadata(slot_mapping=torch.tensor(slots, dtype=torch.long, device=dev))
        if decode:
            meta.num_decode = len(decode)
            meta.decode_slots, meta.decode_mask, meta.decode_lengths = self._decode_context(
                [s.seq for s in decode]
            )
        for row, n, start, table in prefill_specs:
            chunk = PrefillChunk(start=row, length=n)
            if start > 0:
                ctx = start + n
                chunk.context_slots = self._context_slots(table, ctx)
                q_pos = torch.arange(start, ctx, device=dev)[:, None]
                chunk.mask = torch.arange(ctx, device=dev)[None, :] <= q_pos
            meta.prefills.append(chunk)
        return (
            torch.tensor(tokens, dtype=torch.long, device=dev),
            torch.tensor(positions, dtype=torch.long, device=dev),
            meta,
            torch.tensor(sample_rows, dtype=torch.long, device=dev),
        )

    def _context_slots(self, table: list[int], ctx: int) -> torch.Tensor:
        blocks = torch.tensor(table[: -(-ctx // self.block_size)], dtype=torch.long, device=self.device)
        offsets = torch.arange(self.block_size, device=self.device)
        return (blocks[:, None] * self.block_size + offsets).flatten()[:ctx]

    def _decode_context(self, seqs: list[Sequence]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Context slots [seqs, max_len], the padding mask (None without padding) and the lengths."""
        bs = self.block_size
        lengths = [s.num_computed_tokens + 1 for s in seqs]
        max_len = max(lengths)
        max_blocks = -(-max_len // bs)
        tables = [
            s.block_table[:max_blocks] + [0] * (max_blocks - len(s.block_table[:max_blocks])) for s in seqs
        ]
        blocks = torch.tensor(tables, dtype=torch.long, device=self.device)
        offsets = torch.arange(bs, device=self.device)
        ctx_slots = (blocks[:, :, None] * bs + offsets).view(len(seqs), -1)[:, :max_len].contiguous()
        lens = torch.tensor(lengths, dtype=torch.long, device=self.device)
        if min(lengths) == max_len:
            return ctx_slots, None, lens
        mask = torch.arange(max_len, device=self.device)[None, :] < lens[:, None]
        return ctx_slots, mask[:, None, None, :], lens
