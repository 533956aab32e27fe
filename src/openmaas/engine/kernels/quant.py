"""Our AVX2 kernels for quantised weights (quant.c): 1-4 row matmuls of fp32 activations by int8 / int4
weights (engine/quant.py's formats), and dequantising rows into fp32 for larger batches.

They are compiled into their own library with AVX2/FMA/F16C only (never AVX-512), so they load on
every x86-64 CPU of the last decade. Where the AVX-512 library loads with quant512.c (AVX-512 VNNI),
decode steps take that instead (models/linear.py); this kernel stays the fallback for other CPUs, and
its dequantising entry serves larger batches everywhere. Built and cached by
`openmaas.engine.kernels.build` and loaded by its `load_once`; where that fails or the CPU lacks AVX2,
`load_quant_kernels()` returns None (the reason logged once) and quantised layers dequantise slices and
multiply with PyTorch.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import torch

from openmaas.engine.kernels import build as build_library
from openmaas.engine.kernels import cpu_flags, data_ptr_or_none, load_once
from openmaas.engine.quant import QuantizedWeight

log = logging.getLogger(__name__)

SOURCES = [Path(__file__).with_name("quant.c")]
FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared", "-fPIC"]
NEEDED_FLAGS = {"avx2", "fma", "f16c"}
FORMAT_CODES = {"int8": 0, "int4": 1}
# Which block product the matmul runs: 0 = int8-quantised activations with integer dot products
# (llama.cpp's way), 1 = fp32 activations with the weights widened in registers. See quant.c.
Q8_ACTIVATIONS, F32_ACTIVATIONS = 0, 1

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_loaded: dict[str, QuantKernels | None] = {}


class QuantKernels:
    """quant.c's entry points on PyTorch's intra-op threads."""

    def __init__(self, lib: ctypes.CDLL, variant: int = Q8_ACTIVATIONS) -> None:
        self.variant = variant
        self.max_rows = int(lib.omaas_qmatmul_max_rows())
        self._matmul = lib.omaas_qmatmul
        self._matmul.argtypes = [_INT, _INT, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _INT]
        self._matmul.restype = _INT
        self._dequant = lib.omaas_qdequant
        self._dequant.argtypes = [_INT, _P, _P, _P, _I64, _I64, _I64, _INT]
        self._dequant.restype = _INT
        self._dequant_bf16 = lib.omaas_qdequant_bf16
        self._dequant_bf16.argtypes = [_INT, _P, _P, _P, _I64, _I64, _I64, _INT]
        self._dequant_bf16.restype = _INT

    def fits(self, x: torch.Tensor) -> bool:
        """Whether `matmul` takes x: 1-4 rows (x 2-D, on CPU)."""
        return x.dim() == 2 and 1 <= x.shape[0] <= self.max_rows and x.device.type == "cpu"

    def matmul(self, x: torch.Tensor, q: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
        """x [m, k] (any float dtype) @ dequant(q)^T (+ bias) -> [m, n] in x's dtype, summed in fp32."""
        m, k = x.shape
        n = q.shape[0]
        x32 = x.to(torch.float32).contiguous()
        b32 = None if bias is None else bias.to(torch.float32)
        y = torch.empty((m, n), dtype=torch.float32)
        rc = self._matmul(
            FORMAT_CODES[q.format], self.variant, x32.data_ptr(), q.qweight.data_ptr(), q.scales.data_ptr(),
            data_ptr_or_none(b32), y.data_ptr(), m, n, k, q.group_size, torch.get_num_threads(),
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"quantised matmul: bad shapes x {tuple(x.shape)}, weight {q.shape} ({rc})")
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    def dequantize_rows(self, q: QuantizedWeight, start: int, rows: int, out: torch.Tensor) -> None:
        """out (fp32 or bf16 [rows, k], contiguous) = the float values of q's rows [start, start + rows),
        in bf16 rounded as PyTorch's vectorised conversion rounds fp32 (the same bits as dequantising
        to fp32 and `copy_` into bf16)."""
        if out.dtype not in (torch.float32, torch.bfloat16) or not out.is_contiguous():
            raise ValueError(f"dequantise: out must be contiguous fp32 or bf16, not {out.dtype}")
        k = q.shape[1]
        if out.numel() != rows * k:
            raise ValueError(f"dequantise: out holds {out.numel()} values, not {rows} x {k}")
        w = q.qweight[start : start + rows]
        s = q.scales[start : start + rows]
        rc = (self._dequant if out.dtype == torch.float32 else self._dequant_bf16)(
            FORMAT_CODES[q.format], w.data_ptr(), s.data_ptr(), out.data_ptr(), rows, k, q.group_size,
            torch.get_num_threads(),
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"dequantise: bad shapes {q.shape}, rows {start}+{rows}")


def build() -> Path:
    """Compile quant.c (cached like gemv.c's library) and return the library's path."""
    return build_library(sources=SOURCES, flags=FLAGS, name="quant")


def load_quant_kernels(variant: int = Q8_ACTIVATIONS) -> QuantKernels | None:
    """The kernels, or None where this machine cannot build or run them (logged once)."""
    missing = NEEDED_FLAGS - cpu_flags()
    problem = f"this CPU lacks {', '.join(sorted(missing))}" if missing else None

    def make() -> QuantKernels:
        return QuantKernels(ctypes.CDLL(str(build())), variant)

    fallback = "quantised layers dequantise and multiply"
    return load_once(_loaded, str(variant), problem, make, "quantised kernels", fallback, log)
