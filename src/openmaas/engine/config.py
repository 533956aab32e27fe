"""EngineConfig: the knobs of one LLM engine instance (KV cache size, batching limits, dtype, device).

It holds plain values only; the engine derives everything else (block counts from a memory budget,
the model's context length) when it starts. It must not import torch at module level beyond types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from openmaas.engine.quant import FORMATS, QuantFormat

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class EngineConfig:
    """How one engine runs one model.

    `num_blocks` sizes the paged KV cache directly; if it is None, `kv_cache_memory_bytes` is divided
    by the bytes one block takes. `max_model_len` None means the model's `max_position_embeddings`.
    `dtype` "auto" follows the checkpoint's where the device computes it natively, except that a
    quantised model runs in float32 on a CPU (`choose_dtype`).
    """

    model: str = ""
    block_size: int = 16
    num_blocks: int | None = None
    kv_cache_memory_bytes: int = 512 * 1024 * 1024
    max_num_seqs: int = 64
    # Tokens one step may compute (decode tokens plus prefill chunks). None: 256 on CPU, 2048 on CUDA.
    # Every running sequence waits for its step, so a prefill chunk stalls the others' next token: on
    # a 2-core CPU a 512-token chunk of a 0.5B model takes ~1.2 s in bf16. Measured at 16 concurrent
    # 128-token prompts: budget 512 -> 256 cut the inter-token p99 from 975 to 509 ms and the median
    # time to first token from 3.0 to 2.5 s for 1.5% less throughput (CPU prefill is compute-bound
    # from ~64 tokens up, so smaller chunks cost little). Quantised weights add a fixed cost to every
    # step with more than 4 prefill rows (each weight dequantised once a step: Q4_0 0.5B, 2 threads,
    # ~170 ms of a 256-token step's ~450 ms), yet 256 still gave the best time to first token: 16 x
    # 128-token prompts at once, engine alone, budget 256 / 1024 / 2048: TTFT p50 2.2 / 2.7 / 3.2 s,
    # p90 3.6 / 3.6 / 3.2 s; through the API, 512 against 256 took TTFT p50 from 0.27x to 0.34x
    # llama-server's and output tokens/s from 174% to 167% of its (benchmarks/llm_server.py).
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    dtype: str = "auto"
    device: str = "cpu"
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    max_waiting_requests: int = 256
    num_threads: int | None = None
    # On CPU, run the model's matmuls through oneDNN on weights reordered once at load (much faster at
    # decode shapes than PyTorch's own CPU matmul; see models/linear.py). False: plain F.linear.
    cpu_onednn: bool = True
    # On x86-64 CPUs with AVX-512, decode steps run our own C kernels (openmaas.engine.kernels, built with
    # the system's C compiler at first use): matmuls of 1-4 rows on plain weights kept on huge pages
    # (beside oneDNN's copy for larger batches, made while both copies fit in half the machine's memory),
    # RMSNorm with the residual add, RoPE, the SiLU gate, decode attention and the greedy pick.
    # False: PyTorch's ops and oneDNN only (and half the weight memory), and quantised layers (below)
    # dequantise and multiply instead of running kernels/quant.c.
    cpu_kernels: bool = True
    # LoRA adapters served on this base (engine/lora.py): how many stay resident at once (least
    # recently used out; 0 serves none) and the largest rank they may have. Each resident slot costs,
    # per layer, max_lora_rank x (3 x (hidden + q/k/v width) + ...) values — with the defaults about
    # 1/40 of a Qwen2.5-0.5B's weights per slot — allocated only once an adapter is first asked for.
    max_loras: int = 8
    max_lora_rank: int = 16
    # Weight-only quantisation of the decoder layers' projections at load (engine/quant.py, loader.py):
    # None keeps the float weights; "int8" / "int4" with one fp16 scale per `quantization_group_size`
    # inputs (a multiple of 32; 0 for one scale per output channel). Decode steps then read 2-4x (int8)
    # or 4-8x (int4) fewer weight bytes than bf16/fp32 (models/linear.py, kernels/quant.c).
    quantization: QuantFormat | None = None
    quantization_group_size: int = 32
    # Speculative decoding by n-gram prompt lookup (engine/speculative.py): each decoding sequence
    # guesses up to `speculative_tokens` next tokens from the latest earlier occurrence of its last
    # n tokens (n from `prompt_lookup_max` down to `prompt_lookup_min`) and verifies them in one
    # forward. 0: off. Greedy output stays the same token for token; sampling keeps its distribution.
    speculative_tokens: int = 0
    prompt_lookup_max: int = 4
    prompt_lookup_min: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.block_size <= 0:
            raise ValueError("block_size must be positive")
        if self.num_blocks is not None and self.num_blocks <= 0:
            raise ValueError("num_blocks must be positive")
        if self.max_num_seqs <= 0 or self.step_token_budget <= 0:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be positive")
        if self.max_loras < 0 or self.max_lora_rank <= 0:
            raise ValueError("max_loras must be at least 0 and max_lora_rank positive")
        if self.max_waiting_requests <= 0:
            raise ValueError("max_waiting_requests must be positive")
        if self.quantization is not None and self.quantization not in FORMATS:
            raise ValueError(f"unknown quantization {self.quantization!r}; use one of {FORMATS}")
        if self.quantization_group_size < 0 or self.quantization_group_size % 32:
            raise ValueError("quantization_group_size must be a multiple of 32 (0: per output channel)")
        if self.speculative_tokens < 0 or not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError(
                "speculative_tokens must be at least 0, and 1 <= prompt_lookup_min <= prompt_lookup_max"
            )
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; use one of {sorted(_DTYPES)} or 'auto'")

    @property
    def step_token_budget(self) -> int:
        if self.max_num_batched_tokens is not None:
            return self.max_num_batched_tokens
        return 256 if self.torch_device.type == "cpu" else 2048

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def choose_dtype(self, checkpoint: str | None, *, cpu_computes: Callable[[torch.dtype], bool]) -> Choice:
        """The dtype to run in, and why. "auto" takes the checkpoint's (`torch_dtype` in its
        config.json) where the device computes it natively: on CUDA bf16 where the GPU has it, and
        fp16; on a CPU, bf16 or fp16 only where `cpu_computes` it (AVX512-BF16/FP16 or AMX: measured
        2x fp32's decode speed there); elsewhere fp32, which a CPU without them runs faster than
        half precision (emulated). A checkpoint in fp32, or naming none, runs in fp32. With
        `quantization` a CPU runs fp32 activations whatever the checkpoint: the weight bytes a step
        reads are the quantised ones either way (fp32 cost 0-14% of batch-1 decode speed in two
        rounds of benchmarks/llm_engine.py on a shared 2-core host, and takes twice the KV cache per
        token), the matmuls round their inputs to int8 (1-16 rows) or bf16 (prefill) in both, and the
        fp32 residual stream and KV cache keep the output as close to the float model's as llama.cpp's
        at the same bit width (its Q8_0/Q4_0 compute in fp32 too); bf16 activations were 1.04x
        llama.cpp's KL (benchmarks/llm_fidelity.py)."""
        if self.dtype != "auto":
            return Choice(_DTYPES[self.dtype], f"dtype {self.dtype} was asked for")
        saved = _DTYPES.get(checkpoint or "")
        if saved is None or saved == torch.float32:
            named = f"is {checkpoint}" if checkpoint else "names no dtype"
            return Choice(torch.float32, f"auto: the checkpoint {named}")
        if self.torch_device.type == "cuda":
            if saved == torch.bfloat16 and not torch.cuda.is_bf16_supported():
                return Choice(torch.float16, "auto: the checkpoint is bfloat16, which this GPU lacks")
            return Choice(saved, f"auto: the checkpoint is {checkpoint}")
        if self.torch_device.type == "cpu" and self.quantization is not None:
            return Choice(
                torch.float32,
                f"auto: the checkpoint is {checkpoint}, but its weights are quantised ({self.quantization}): "
                "on a CPU those run with float32 activations, residual stream and KV cache, as llama.cpp's "
                f"do (with {checkpoint} ones our int8 was further from the float model than "
                "llama.cpp's Q8_0)",
            )
        if self.torch_device.type == "cpu" and cpu_computes(saved):
            return Choice(saved, f"auto: the checkpoint is {checkpoint}, which this CPU computes natively")
        return Choice(
            torch.float32,
            f"auto: the checkpoint is {checkpoint}, but this {self.torch_device.type.upper()} has no "
            f"native {checkpoint} arithmetic (AVX512-BF16/FP16 or AMX), where float32 runs faster",
        )


@dataclass(frozen=True)
class Choice:
    """A dtype the engine runs in, and the reason, which the engine logs at start."""

    dtype: torch.dtype
    reason: str
