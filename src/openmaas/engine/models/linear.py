"""Linear layer with two CPU paths: row-split matmuls for small batches, and an fp32 path for batched
bf16/fp16 matmuls on CPUs without native 16-bit math.

Row split: PyTorch runs a matmul of a few rows (a decode step) on one core — its GEMV does not
split across the intra-op threads — so a batch-1 step reads the weights at one core's bandwidth.
With `RowSplit`, each small-batch matmul is cut into as many blocks of output features as there
are threads; the caller computes the first block while a persistent pool computes the others,
each a plain `F.linear` on a contiguous slice of the weight (the same kernel and numerics).

On such CPUs (AVX2-only x86, for instance) PyTorch's bf16 GEMM runs several times slower than fp32,
yet a bf16 decode step at batch 1 is memory-bound and gains from reading half the bytes. So batch-1
steps use the bf16 weights directly, and steps with at least `UpcastPlan.min_rows` rows convert the
weight to fp32 a slice at a time into one shared, reused scratch buffer (fresh large allocations on
CPU cost page faults) and multiply in fp32. Numerics equal an fp32 matmul of the bf16 values.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UpcastPlan:
    min_rows: int
    scratch: torch.Tensor  # flat fp32 buffer shared by every layer
    chunk_rows_budget: int  # elements one weight slice may hold


class RowSplit:
    """Runs matmuls of at most `max_rows` rows as `parts` blocks of output features in parallel."""

    def __init__(self, parts: int, max_rows: int) -> None:
        self.parts = parts
        self.max_rows = max_rows
        self._pool = ThreadPoolExecutor(max_workers=parts - 1, thread_name_prefix="engine-matmul")

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        step = -(-weight.shape[0] // self.parts)
        weights = weight.split(step)
        biases = bias.split(step) if bias is not None else [None] * len(weights)
        inference = torch.is_inference_mode_enabled()
        futures = [
            self._pool.submit(_linear_in_mode, inference, x, w, b)
            for w, b in zip(weights[1:], biases[1:], strict=True)
        ]
        first = F.linear(x, weights[0], biases[0])
        return torch.cat([first, *(f.result() for f in futures)], dim=-1)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _linear_in_mode(
    inference: bool, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    # Inference mode is per thread: a pool thread enters the caller's.
    if not inference:
        return F.linear(x, weight, bias)
    with torch.inference_mode():
        return F.linear(x, weight, bias)


class Linear(nn.Linear):
    upcast: UpcastPlan | None = None
    split: RowSplit | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.upcast
        if plan is not None and x.shape[0] >= plan.min_rows:
            return self._upcast_forward(x, plan)
        split = self.split
        if split is not None and x.shape[0] <= split.max_rows:
            return split.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    def _upcast_forward(self, x: torch.Tensor, plan: UpcastPlan) -> torch.Tensor:
        n_out, n_in = self.weight.shape
        x32 = x.float()
        out_t = torch.empty((n_out, x.shape[0]), dtype=torch.float32, device=x.device)
        step = max(1, plan.chunk_rows_budget // n_in)
        for start in range(0, n_out, step):
            rows = min(step, n_out - start)
            w32 = plan.scratch[: rows * n_in].view(rows, n_in)
            w32.copy_(self.weight[start : start + rows])
            torch.mm(w32, x32.t(), out=out_t[start : start + rows])
        out = out_t.t()
        if self.bias is not None:
            out = out + self.bias.float()
        return out.to(x.dtype)


def cpu_has_fast_half(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies bf16/fp16 natively (AVX512-BF16/FP16 or AMX)."""
    cpu = torch.cpu
    checks = [
        "_is_amx_tile_supported",
        "_is_avx512_bf16_supported" if dtype == torch.bfloat16 else "_is_avx512_fp16_supported",
    ]
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def enable_fp32_batched_matmul(model: nn.Module, min_rows: int = 4, chunk_elements: int = 4 << 20) -> None:
    """Route matmuls of `min_rows`+ rows through fp32 (see module docstring)."""
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    if not linears:
        return
    device = linears[0].weight.device
    largest_in = max(m.in_features for m in linears)
    size = max(chunk_elements, largest_in)
    plan = UpcastPlan(min_rows, torch.empty(size, dtype=torch.float32, device=device), size)
    for m in linears:
        m.upcast = plan


def enable_row_split(model: nn.Module, parts: int, max_rows: int = 8) -> RowSplit | None:
    """Split matmuls of up to `max_rows` rows across `parts` threads (see module docstring)."""
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    if parts < 2 or not linears:
        return None
    split = RowSplit(parts, max_rows)
    for m in linears:
        m.split = split
    return split
