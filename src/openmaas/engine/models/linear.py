"""Linear layer with two CPU paths: oneDNN matmuls on reordered weights, and an fp32 path for batched
bf16/fp16 matmuls on CPUs without native 16-bit math.

oneDNN: PyTorch's own CPU matmul is slow at decode shapes: its GEMV for a batch-1 step runs on one
core, and MKL's fp32 GEMM of 4 to 16 rows reaches a fraction of the CPU's speed. oneDNN's matmul on a
weight reordered once into its blocked layout (what inductor does for frozen CPU models) uses every
intra-op thread at any row count. On a 2-core AVX512-BF16 machine a Qwen2.5-0.5B decode step took
82 -> 53 ms (bf16, batch 1), 113 -> 80 ms (bf16, batch 16), 92 -> 86 ms (fp32, batch 1) and
310 -> 127 ms (fp32, batch 16). The reordered weight replaces the plain one, except a weight that
another module shares (the tied embedding), which keeps its plain tensor beside the reordered copy.

On CPUs without native bf16/fp16 math (AVX2-only x86, for instance) PyTorch's bf16 GEMM runs several
times slower than fp32, yet a bf16 decode step at batch 1 is memory-bound and gains from reading half
the bytes. So batch-1 steps use the bf16 weights directly, and steps with at least
`UpcastPlan.min_rows` rows convert the weight to fp32 a slice at a time into one shared, reused
scratch buffer (fresh large allocations on CPU cost page faults) and multiply in fp32. Numerics equal
an fp32 matmul of the bf16 values.

Quantised weights (engine/quant.py): `set_quantized` swaps a layer's float weight for a
`QuantizedWeight` (the float one freed). Steps of 1-4 rows then run our AVX-512 VNNI kernel
(kernels/quant512.c, in the model's dtype, given by `enable_cpu_kernels` as `kernels`) where it loads,
else our AVX2 one (kernels/quant.c, in fp32); a decode step of a model whose projections are all
quantised runs each layer in one call instead (models/llama.py, kernels/layer.c), with the same
kernel. Larger batches, prefill, CUDA and CPUs without either dequantise the weight a slice of output
rows at a time into the shared scratch buffer and multiply there, so no step allocates the whole float
matrix. On a CPU with native bf16 math (AVX512-BF16 / AMX) that multiply runs in bf16: each slice
is dequantised straight to bf16 (kernels/quant.c: the fp32 value rounded as PyTorch rounds it, with
no fp32 copy; a 16-token prefill of the Qwen2.5-0.5B shape, two rounds at load ~1: int4 151 -> 114
and 185 -> 126 ms, int8 167 -> 166 and 176 -> 150), the activations are rounded to bf16 and oneDNN's
bf16 matmul (AMX tiles where present) sums in fp32. Measured on 2 cores of a heavily loaded host (load
14-19), a Qwen2.5-0.5B-shaped gate/up layer (896 -> 9728) at 1,024 rows: int8 1.9x, int4 2.1x faster
than fp32; at 128 rows, where dequantising the slices dominates, about the same. Through the whole
engine (Qwen2.5-0.5B shape, fp32 activations, one prompt, 2 threads, load 6-9, second of two rounds
taken in turns): int8 prefill 93 -> 115 tokens/s at 128 tokens, 71 -> 98 at 1,024; int4 12 -> 114
and 32 -> 173 (noisy; rerun benchmarks/llm_engine.py --prefill-only on a quiet host). The rounding is
a bf16 model's (relative 2^-9 per weight, activation and output), finer than llama.cpp's Q8_0/Q4_0
prefill, which rounds activations to 8 bits, and than our own 1-4 row kernels, which do too. It comes
with those kernels: a kernel-less engine, CUDA and other CPUs multiply in fp32 (CPU) or x's dtype
(CUDA). LoRA deltas are added to the output as for a float weight.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from openmaas.engine.kernels import CpuKernels
from openmaas.engine.kernels.quant import QuantKernels, load_quant_kernels
from openmaas.engine.quant import QuantizedWeight, dequantize

if TYPE_CHECKING:
    from openmaas.engine.lora import LoraWeights


# Set while a model runs the layers of a decode-only step (one row per sequence) or its lm_head:
# quantised layers then take quant512.c for up to 16 rows. Prefill keeps 1-4 rows there and more on
# dequantise-and-multiply, so a prompt's KV cache does not depend on whether part of it came from the
# prefix cache.
_DECODE_STEP: ContextVar[bool] = ContextVar("decode_step", default=False)


@contextmanager
def decode_step(active: bool = True) -> Iterator[None]:
    """Marks the matmuls run inside as those of a decode-only step (when `active`)."""
    token = _DECODE_STEP.set(active)
    try:
        yield
    finally:
        _DECODE_STEP.reset(token)


@dataclass
class UpcastPlan:
    min_rows: int
    scratch: torch.Tensor  # flat fp32 buffer shared by every layer
    chunk_rows_budget: int  # elements one weight slice may hold
    half: torch.Tensor | None = None  # flat bf16 buffer: quantised layers multiply in bf16 (see above)


class Linear(nn.Linear):
    upcast: UpcastPlan | None = None
    onednn_weight: torch.Tensor | None = None
    kernels: CpuKernels | None = None  # our decode matmul, on the plain weight (or the quantised one)
    lora: LoraWeights | None = None  # stacked adapters (engine/lora.py), set on first adapter use
    quantized: QuantizedWeight | None = None  # set by set_quantized: the weight, in place of `weight`
    quant_kernels: QuantKernels | None = None  # our AVX2 1-4 row kernel for it, where it loads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lora = self.lora
        if lora is not None and lora.batch.active:  # a step with adapter rows
            return lora.add_delta(self._forward(x), x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantized is not None:
            return self._quantized_forward(x, self.quantized)
        kernels = self.kernels
        if kernels is not None and kernels.fits_gemv(x):
            return kernels.gemv(x, self.weight, self.bias)
        if self.onednn_weight is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.onednn_weight, self.bias, "none", [], "")
        plan = self.upcast
        if plan is not None and x.shape[0] >= plan.min_rows:
            return self._upcast_forward(x, plan)
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

    def _quantized_forward(self, x: torch.Tensor, q: QuantizedWeight) -> torch.Tensor:
        """1-4 rows (or, in a decode-only step, 1-16): our AVX-512 VNNI kernel (quant512.c, in the model's
        dtype) where it loads, else the AVX2 one (quant.c, 1-4 rows, fp32); otherwise (prefill, larger
        batches) dequantise and multiply."""
        kernels = self.kernels
        if (
            kernels is not None
            and kernels.fits_qgemv(x)
            and (x.shape[0] <= kernels.max_rows or _DECODE_STEP.get())
        ):
            return kernels.qgemv(x, q, self.bias)
        quant = self.quant_kernels
        if quant is not None and quant.fits(x):
            return quant.matmul(x, q, self.bias)
        return self._dequantized_forward(x, q)

    def _dequantized_forward(self, x: torch.Tensor, q: QuantizedWeight) -> torch.Tensor:
        """x @ dequant(q)^T (+ bias), dequantising a slice of output rows at a time: into the shared
        scratch on CPU (bf16 where the plan has a bf16 buffer: straight there with our kernels, else
        through the fp32 one), or a per-call buffer in x's dtype (CUDA) or fp32 (a CPU layer without
        the shared scratch)."""
        n_out, n_in = q.shape
        lead = x.shape[:-1]
        x2 = x.reshape(-1, n_in)
        plan = self.upcast if x.device.type == "cpu" else None
        if plan is not None:
            scratch, half, budget = plan.scratch, plan.half, plan.chunk_rows_budget
        else:
            scratch, half, budget = None, None, 4 << 20
        compute = torch.bfloat16 if half is not None else torch.float32 if x.device.type == "cpu" else x.dtype
        step = max(1, min(n_out, budget // n_in))
        if scratch is None:
            scratch = torch.empty(step * n_in, dtype=compute, device=x.device)
        xc = x2.to(compute)
        out_t = torch.empty((n_out, x2.shape[0]), dtype=compute, device=x.device)
        for start in range(0, n_out, step):
            rows = min(step, n_out - start)
            if self.quant_kernels is not None:
                # Straight into the buffer the matmul reads (bf16 where the plan has one).
                w = (scratch if half is None else half)[: rows * n_in].view(rows, n_in)
                self.quant_kernels.dequantize_rows(q, start, rows, w)
            else:
                w = scratch[: rows * n_in].view(rows, n_in)
                w.copy_(dequantize(_row_slice(q, start, rows), w.dtype))
                if half is not None:
                    w = half[: rows * n_in].view(rows, n_in).copy_(w)
            torch.mm(w, xc.t(), out=out_t[start : start + rows])
        # Row-major like every other matmul's output: our C kernels after this layer (the SiLU gate,
        # RoPE, attention) read their input as contiguous rows. A transposed view here gave wrong,
        # run-to-run different tokens on a quantised engine with kernels (prefills of 5+ tokens).
        out = out_t.t().contiguous()
        if self.bias is not None:
            out = out + self.bias.to(compute)
        return out.to(x.dtype).reshape(*lead, n_out)


def _row_slice(q: QuantizedWeight, start: int, rows: int) -> QuantizedWeight:
    end = start + rows
    return QuantizedWeight(q.format, q.qweight[start:end], q.scales[start:end], q.group_size)


@torch.no_grad()
def set_quantized(
    linear: Linear, q: QuantizedWeight, kernels: bool = True, dtype: torch.dtype | None = None
) -> None:
    """Make `linear` compute with `q` (shape [out_features, in_features]) instead of its float weight,
    which is freed (an empty tensor of `dtype`, by default the weight's own, stays in its place on its
    device, so code that asks the layer's dtype still can: the model's, for a weight `stage_weight`
    narrowed). A weight another module shares (the tied embedding) stays with that module. `kernels`
    False keeps the dequantise-and-matmul path only (tests, comparisons)."""
    if q.shape != (linear.out_features, linear.in_features):
        shape = (linear.out_features, linear.in_features)
        raise ValueError(f"quantised weight {q.shape} does not fit a layer of weight shape {shape}")
    device = linear.weight.device
    if q.qweight.device != device:
        q = QuantizedWeight(q.format, q.qweight.to(device), q.scales.to(device), q.group_size)
    empty = torch.empty(0, dtype=dtype or linear.weight.dtype, device=device)
    linear.weight = nn.Parameter(empty, requires_grad=False)
    linear.onednn_weight = None
    linear.kernels = None
    linear.quantized = q
    linear.quant_kernels = load_quant_kernels() if kernels and device.type == "cpu" else None


def stage_weight(linear: Linear, dtype: torch.dtype) -> None:
    """Give `linear` an (uninitialised) weight of `dtype` for a loader to fill before it is quantised:
    a checkpoint's bf16 matrix then takes its own bytes while the model runs in fp32, and quantising it
    gives the same values (the quantiser computes in fp32)."""
    empty = torch.empty(linear.weight.shape, dtype=dtype, device=linear.weight.device)
    linear.weight = nn.Parameter(empty, requires_grad=False)


def share_dequant_scratch(model: nn.Module, chunk_elements: int = 4 << 20, half: bool | None = None) -> None:
    """Give every quantised layer of `model` one shared scratch for dequantising slices (larger batches
    and prefill): fp32, and a bf16 one where `half` so that those matmuls run in bf16. By default
    `half` where this CPU has native bf16 math and oneDNN and the layers run our kernels: a kernel-less
    engine (`cpu_kernels` False) keeps the float model's arithmetic, the reference tests compare with.
    Without the scratch each such call allocates its own. CPU only."""
    layers = [m for m in model.modules() if isinstance(m, Linear) and m.quantized is not None]
    if not layers or layers[0].weight.device.type != "cpu":
        return
    if half is None:
        fast = cpu_has_fast_half(torch.bfloat16) and torch.backends.mkldnn.is_available()
        half = fast and all(m.quant_kernels is not None for m in layers)
    size = max(chunk_elements, max(m.in_features for m in layers))
    bf16 = torch.empty(size, dtype=torch.bfloat16) if half else None
    plan = UpcastPlan(1, torch.empty(size, dtype=torch.float32), size, bf16)
    for m in layers:
        m.upcast = plan


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
    linears = [m for m in model.modules() if isinstance(m, Linear) and m.quantized is None]
    if not linears:
        return
    device = linears[0].weight.device
    largest_in = max(m.in_features for m in linears)
    size = max(chunk_elements, largest_in)
    plan = UpcastPlan(min_rows, torch.empty(size, dtype=torch.float32, device=device), size)
    for m in linears:
        m.upcast = plan


def onednn_available(device: torch.device) -> bool:
    return device.type == "cpu" and torch.backends.mkldnn.is_available()


@torch.no_grad()
def enable_onednn_matmul(model: nn.Module, keep_plain: bool = False) -> None:
    """Run every `Linear` of `model` through oneDNN with its weight reordered once (see module docstring).

    A weight that another module shares (tied embeddings) is reordered into a copy; any other weight is
    replaced by its reordered tensor (opaque oneDNN layout: only `Linear.forward` can use it), so the
    model holds each matrix once and `parameters()` still counts each once. No batch-size hint: the
    default layout measured as fast as the batch-1 or batch-16 layouts at batch 1 and faster at 16 and
    in prefill. `keep_plain` keeps every plain weight as well (our decode kernel reads it). Quantised
    layers keep their own paths."""
    linears = [m for m in model.modules() if isinstance(m, Linear) and m.quantized is None]
    others = {
        id(p) for m in model.modules() if not isinstance(m, Linear) for p in m.parameters(recurse=False)
    }
    for m in linears:
        reordered = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach())
        if not keep_plain and id(m.weight) not in others:
            m.weight = nn.Parameter(reordered, requires_grad=False)
        m.onednn_weight = reordered
