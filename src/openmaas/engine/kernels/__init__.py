"""Our CPU kernels for decode steps (`gemv.c`, `ops.c`, `layer.c`, and `quant512.c` for quantised
weights), built with the system's C compiler at install (`python -m openmaas.engine.kernels`, run by
`make install`) or at first use.

A decode step multiplies one to four activation rows by every weight matrix: it is bound by how fast
the weights stream from memory. oneDNN's kernels reach 20-35 GB/s there on a 2-core Zen 4; ours, reading
each thread's weight rows as one sequential stream from memory backed by 2 MiB pages, 35-70 GB/s in
bf16 and 37-44 GB/s in fp32 (see gemv.c for how). The rest of a step was ~800 small PyTorch ops;
ops.c does RMSNorm (with the residual add), RoPE, the SiLU gate, decode attention and the greedy pick
in one call each, and layer.c runs a whole decoder layer of a decode-only step in one call. Batch-1
decode of a Qwen2.5-0.5B-shaped model went from 60-69% of llama.cpp's speed to 96-123% in bf16 and
from 92% to 112-132% in fp32 (benchmarks/llm_engine.py).

Quantised weights (engine/quant.py's int8 and Q4_0-packed int4): where the CPU has AVX-512 VNNI the
library also holds quant512.c, whose 1-4 row matmul rounds activations to int8 per run of 32 (as
llama.cpp does) and multiplies with vpdpbusd, in the model's own dtype (`CpuKernels.qgemv`), and
layer.c's one-call layer for models whose projections are all quantised (`decode_qlayer`): the same
functions in the same order as the op-by-op path, so the two agree bit for bit. Without VNNI the library
is built without them (`CpuKernels.quantized` False) and quantised layers take quant.c's AVX2 kernel
(kernels/quant.py) op by op, or dequantise.

Each library is compiled once per source, compiler and flag set into a per-user cache directory
(`OPENMAAS_KERNEL_DIR`, else `$XDG_CACHE_HOME/openmaas/kernels`, else `~/.cache/openmaas/kernels`) and
loaded with ctypes (`build`, `load_once`: shared with kernels/quant.py). Where it cannot be built (no C
compiler, no OpenMP, not x86-64 Linux) or the CPU lacks AVX-512, `load_kernels()` returns None and the
engine keeps PyTorch's ops and oneDNN; the reason is logged once.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import mmap
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

if TYPE_CHECKING:
    from openmaas.engine.quant import QuantizedWeight

log = logging.getLogger(__name__)

SOURCES = [Path(__file__).with_name(name) for name in ("gemv.c", "ops.c", "layer.c")]
HEADERS = [Path(__file__).with_name("kernels.h")]
# Quantised weights' matmul and decode layer: in the library where the CPU has AVX-512 VNNI.
QUANT_SOURCES = [Path(__file__).with_name("quant512.c")]
QUANT_FLAGS = ["-mavx512vnni", "-mf16c"]
QUANT_CPU_FLAGS = {"avx512_vnni", "f16c"}
FORMAT_CODES = {"int8": 0, "int4": 1}
FLAGS = [
    "-ffp-contract=off",
    "-O3",
    "-mavx512f",
    "-mavx512bw",
    "-mavx512vl",
    "-mavx512bf16",
    "-mfma",
    "-fopenmp",
    "-shared",
    "-fPIC",
]
HUGE_PAGE = 2 << 20
# Above this many activation bytes per call (rows x width) the rows no longer share L1 with the weight
# stream and oneDNN's blocked kernel is faster (measured: 4 x 4864 bf16 rows, 19 vs 30 GB/s).
MAX_ACTIVATION_BYTES = 20 << 10

_lock = threading.Lock()
_loaded: dict[str, CpuKernels | None] = {}
_K = TypeVar("_K")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cache_dir() -> Path:
    if env := os.environ.get("OPENMAAS_KERNEL_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "openmaas" / "kernels"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def build(
    directory: Path | None = None,
    sources: list[Path] | None = None,
    flags: list[str] | None = None,
    name: str = "gemv",
) -> Path:
    """Compile `sources` (default: gemv.c, ops.c and layer.c) with `flags` (default: FLAGS) into one
    library, once per source, compiler and flag set, and return its path (`name`-<hash>.so). Raises
    RuntimeError with the compiler's message when it cannot be built."""
    sources = SOURCES if sources is None else sources
    flags = FLAGS if flags is None else flags
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    source = b"".join(path.read_bytes() for path in [*sources, *HEADERS])
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    digest = hashlib.sha256(source + " ".join(flags).encode() + version.encode()).hexdigest()[:16]
    if directory is None:
        directory = cache_dir()
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:  # a read-only home: a per-user temporary directory instead
            directory = Path(tempfile.gettempdir()) / f"openmaas-kernels-{os.getuid()}"
    target = directory / f"{name}-{digest}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Compile beside the target and rename into place, so a concurrent loader never sees half a file.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=directory)
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, *flags, "-o", tmp, *map(str, sources)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _bind(lib: ctypes.CDLL, name: str, *args: object, restype: object = None) -> Any:
    fn = getattr(lib, name)
    fn.argtypes = list(args)
    fn.restype = restype
    return fn


_P, _I64, _INT, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float


def data_ptr_or_none(t: torch.Tensor | None) -> int | None:
    """A tensor's address for C, or NULL (None) for an absent one (a bias, the first layer's delta)."""
    return None if t is None else t.data_ptr()


class LayerParams(ctypes.Structure):
    """Pointers to one decoder layer's parameters (layer.c's `omaas_layer`); biases may be None."""

    _fields_ = [
        (name, ctypes.c_void_p)
        for name in (
            "input_norm", "qkv_w", "qkv_b", "o_w", "o_b", "post_norm",
            "gate_up_w", "gate_up_b", "down_w", "down_b",
        )
    ]  # fmt: skip


class QuantProjection(ctypes.Structure):
    """One quantised projection for layer.c's `omaas_decode_qlayer` (`omaas_qproj`)."""

    _fields_ = [
        ("w", ctypes.c_void_p),
        ("scales", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
        ("format", ctypes.c_int64),
        ("group", ctypes.c_int64),
    ]


class QuantLayerParams(ctypes.Structure):
    """Pointers to one decoder layer's parameters whose four projections are quantised (`omaas_qlayer`)."""

    _fields_ = [
        ("input_norm", ctypes.c_void_p),
        ("post_norm", ctypes.c_void_p),
        ("qkv", QuantProjection),
        ("o", QuantProjection),
        ("gate_up", QuantProjection),
        ("down", QuantProjection),
    ]


def quant_projection(q: QuantizedWeight, bias: torch.Tensor | None) -> QuantProjection:
    """A quantised weight's pointers and layout, for the one-call layer (the tensors must stay put)."""
    return QuantProjection(
        q.qweight.data_ptr(),
        q.scales.data_ptr(),
        data_ptr_or_none(bias),
        FORMAT_CODES[q.format],
        q.group_size,
    )


class LayerShape(ctypes.Structure):
    _fields_ = [
        ("hidden", ctypes.c_int64),
        ("heads", ctypes.c_int64),
        ("kv_heads", ctypes.c_int64),
        ("head_dim", ctypes.c_int64),
        ("intermediate", ctypes.c_int64),
        ("eps", ctypes.c_float),
        ("scale", ctypes.c_float),
    ]


@dataclass(frozen=True)
class DecodeStep:
    """What every layer of a one-call decode step reads beside its own weights and KV cache: where
    each token's K/V goes (`slot_mapping`), each sequence's context slots [seqs, max_ctx] and
    lengths, the tokens' positions, and the RoPE tables (fp32 [max_positions, d])."""

    slot_mapping: torch.Tensor
    ctx_slots: torch.Tensor
    lengths: torch.Tensor
    positions: torch.Tensor
    cos: torch.Tensor
    sin_signed: torch.Tensor


class CpuKernels:
    """Our C kernels for one dtype (bf16 or fp32), run on PyTorch's intra-op threads:

    - `gemv`: y = x @ W^T + b for 1-4 contiguous activation rows (gemv.c);
    - `add_rmsnorm`, `rope`, `silu_mul`, `decode_attention`: the small per-layer ops of a decode step,
      and `argmax`, the greedy pick (ops.c);
    - `decode_layer`: a whole decoder layer of a 1-4 token decode step (layer.c);
    - where `quantized` (AVX-512 VNNI): `qgemv`, the matmul of 1-16 rows by quantised weights
      (quant512.c), and `decode_qlayer`, the layer with quantised projections.
    Callers pass tensors in the layouts each method states; `fits_gemv` says when the matmul applies."""

    def __init__(self, lib: ctypes.CDLL, dtype: torch.dtype) -> None:
        sfx = "bf16" if dtype == torch.bfloat16 else "f32"
        self.dtype = dtype
        self.max_rows = int(_bind(lib, "omaas_gemv_max_rows", restype=ctypes.c_int)())
        self.attention_max_d = int(_bind(lib, "omaas_attention_max_d", restype=ctypes.c_int)())
        self.attention_max_group = int(_bind(lib, "omaas_attention_max_group", restype=ctypes.c_int)())
        self._gemv = _bind(lib, f"omaas_gemv_{sfx}", _P, _P, _P, _P, _I64, _I64, _I64, _INT, restype=_INT)
        self._add_rmsnorm = _bind(lib, f"omaas_add_rmsnorm_{sfx}", _P, _P, _P, _P, _I64, _I64, _F32, _INT)
        self._rope = _bind(lib, f"omaas_rope_{sfx}", _P, _P, _P, _P, _I64, _I64, _I64, _I64, _INT)
        self._layer = _bind(
            lib, f"omaas_decode_layer_{sfx}",
            ctypes.POINTER(LayerParams), ctypes.POINTER(LayerShape), _P, _P, _P, _P, _P, _P, _P, _I64, _P, _P,
            _P, _P, _I64, _INT,
            restype=_INT,
        )  # fmt: skip
        self._layer_scratch = _bind(
            lib, "omaas_decode_layer_scratch", ctypes.POINTER(LayerShape), _I64, restype=_I64
        )
        self._silu_mul = _bind(lib, f"omaas_silu_mul_{sfx}", _P, _P, _I64, _I64, _INT)
        self._argmax = _bind(lib, f"omaas_argmax_{sfx}", _P, _P, _I64, _I64, _INT)
        self._attention = _bind(
            lib, f"omaas_decode_attention_{sfx}",
            _P, _I64, _P, _P, _I64, _P, _P, _I64, _I64, _I64, _I64, _F32, _INT,
            restype=_INT,
        )  # fmt: skip
        # quant512.c and the quantised decode layer, where the library has them (AVX-512 VNNI).
        self.quantized = hasattr(lib, f"omaas_qgemv_{sfx}")
        self.qgemv_max_rows = 0
        if self.quantized:
            self._qgemv = _bind(
                lib,
                f"omaas_qgemv_{sfx}",
                _INT,
                _P,
                _P,
                _P,
                _P,
                _P,
                _I64,
                _I64,
                _I64,
                _I64,
                _INT,
                restype=_INT,
            )
            self._qact_row_bytes = _bind(lib, "omaas_qact_row_bytes", _I64, restype=_I64)
            # quant512.c's matmul takes more rows than the fused layer (max_rows, layer.c): it reads each
            # block of weights once and runs tiles of up to four rows over it.
            self.qgemv_max_rows = int(_bind(lib, "omaas_qgemv_max_rows", restype=ctypes.c_int)())
            self._qlayer = _bind(
                lib, f"omaas_decode_qlayer_{sfx}",
                ctypes.POINTER(QuantLayerParams), ctypes.POINTER(LayerShape), _P, _P, _P, _P, _P, _P, _P, _P,
                _I64, _P, _P, _P, _P, _I64, _INT,
                restype=_INT,
            )  # fmt: skip

    def fits_rows(self, rows: int, width: int) -> bool:
        """Whether our matmul takes `rows` activation rows of `width` values (else oneDNN does)."""
        return 1 <= rows <= self.max_rows and (
            rows == 1 or rows * width * self.dtype.itemsize <= MAX_ACTIVATION_BYTES
        )

    def fits_gemv(self, x: torch.Tensor) -> bool:
        return (
            x.dim() == 2
            and self.fits_rows(x.shape[0], x.shape[1])
            and x.dtype == self.dtype
            and x.is_contiguous()
        )

    def fits_qgemv(self, x: torch.Tensor) -> bool:
        """Whether `qgemv` takes x: 1-`qgemv_max_rows` (16) contiguous rows of our dtype, in a library
        with quant512.c (no width limit: the alternative, dequantise-and-multiply, is slower at any
        width)."""
        return (
            self.quantized
            and x.dim() == 2
            and 1 <= x.shape[0] <= self.qgemv_max_rows
            and x.dtype == self.dtype
            and x.is_contiguous()
        )

    def qgemv(self, x: torch.Tensor, q: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
        """x [m, k] contiguous @ dequant(q)^T (+ bias [n] in x's dtype) -> [m, n] in x's dtype
        (quant512.c: x rounded to int8 per run of 32, integer products, fp32 sums)."""
        m, k = x.shape
        n = q.shape[0]
        y = torch.empty((m, n), dtype=x.dtype)
        rc = self._qgemv(
            FORMAT_CODES[q.format], x.data_ptr(), q.qweight.data_ptr(), q.scales.data_ptr(),
            data_ptr_or_none(bias), y.data_ptr(), m, n, k, q.group_size, torch.get_num_threads(),
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"quantised gemv: bad shapes x {tuple(x.shape)}, weight {q.shape} ({rc})")
        return y

    def fits_attention(self, heads: int, kv_heads: int, head_dim: int) -> bool:
        group = heads // kv_heads
        return (
            group * kv_heads == heads
            and group <= self.attention_max_group
            and head_dim <= self.attention_max_d
        )

    def gemv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x [m, k] contiguous, weight [n, k] contiguous, bias [n] or None -> [m, n]."""
        m, k = x.shape
        n = weight.shape[0]
        y = torch.empty((m, n), dtype=x.dtype)
        rc = self._gemv(
            x.data_ptr(),
            weight.data_ptr(),
            data_ptr_or_none(bias),
            y.data_ptr(),
            m,
            n,
            k,
            torch.get_num_threads(),
        )
        if rc != 0:
            raise ValueError(f"gemv: bad shapes x {tuple(x.shape)}, weight {tuple(weight.shape)}")
        return y

    def add_rmsnorm(
        self, h: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float
    ) -> torch.Tensor:
        """h += delta in place (when given), then return RMSNorm(h) * weight. h [rows, n] contiguous,
        delta [rows, n] (copied if not contiguous: the dequantising matmul returns a transposed view),
        weight [n]."""
        rows, n = h.shape
        out = torch.empty_like(h)
        delta = None if delta is None else delta.contiguous()
        self._add_rmsnorm(
            h.data_ptr(),
            data_ptr_or_none(delta),
            weight.data_ptr(),
            out.data_ptr(),
            rows,
            n,
            eps,
            torch.get_num_threads(),
        )
        return out

    def rope(
        self, x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor
    ) -> None:
        """Rotate x [tokens, heads, d] (heads contiguous, any token stride) in place; positions int64
        [tokens]; fp32 tables [max_positions, d]."""
        tokens, heads, d = x.shape
        self._rope(
            x.data_ptr(), positions.data_ptr(), cos.data_ptr(), sin_signed.data_ptr(),
            tokens, heads, d, x.stride(0), torch.get_num_threads(),
        )  # fmt: skip

    def decode_layer(
        self,
        params: LayerParams,
        shape: LayerShape,
        h: torch.Tensor,
        delta: torch.Tensor | None,
        kv_cache: torch.Tensor,
        step: DecodeStep,
        scratch: torch.Tensor,
    ) -> torch.Tensor:
        """One decoder layer for 1-4 decode tokens (layer.c): h [m, hidden] gets delta added in place;
        returns the layer's MLP output [m, hidden]. `scratch` is `layer_scratch(shape, m)`, shared by a
        step's layers. The caller checks `fits_rows` for every matmul width, so each row goes where the
        op-by-op path sends it."""
        return self._run_layer(self._layer, params, shape, h, delta, kv_cache, step, (scratch.data_ptr(),))

    def decode_qlayer(
        self,
        params: QuantLayerParams,
        shape: LayerShape,
        h: torch.Tensor,
        delta: torch.Tensor | None,
        kv_cache: torch.Tensor,
        step: DecodeStep,
        scratch: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """`decode_layer` for a layer whose projections are quantised (quant512.c's matmul, the same
        functions in the same order as `qgemv` op by op); `scratch` is `qlayer_scratch(shape, m)`."""
        floats, qa = scratch
        pointers = (floats.data_ptr(), qa.data_ptr())
        return self._run_layer(self._qlayer, params, shape, h, delta, kv_cache, step, pointers)

    @staticmethod
    def _run_layer(
        function: Any,
        params: LayerParams | QuantLayerParams,
        shape: LayerShape,
        h: torch.Tensor,
        delta: torch.Tensor | None,
        kv_cache: torch.Tensor,
        step: DecodeStep,
        scratch: tuple[int, ...],
    ) -> torch.Tensor:
        """One call of layer.c's `omaas_decode_layer` or `omaas_decode_qlayer`, which take the same
        arguments but their scratch pointers (one float buffer; the qlayer also its activations')."""
        m = h.shape[0]
        out = torch.empty_like(h)
        rc = function(
            ctypes.byref(params), ctypes.byref(shape), h.data_ptr(), data_ptr_or_none(delta), out.data_ptr(),
            *scratch, kv_cache.data_ptr(), step.slot_mapping.data_ptr(), step.ctx_slots.data_ptr(),
            step.ctx_slots.shape[1], step.lengths.data_ptr(), step.positions.data_ptr(), step.cos.data_ptr(),
            step.sin_signed.data_ptr(), m, torch.get_num_threads(),
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"decode layer: unsupported rows {m} or heads {shape.heads}/{shape.kv_heads}")
        return out

    def qlayer_scratch(self, shape: LayerShape, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Working memory for `decode_qlayer` on `rows` tokens: the float scratch and the quantised
        activations' records (of the widest projection input)."""
        widest = max(shape.hidden, shape.heads * shape.head_dim, shape.intermediate)
        qa = torch.empty(rows * int(self._qact_row_bytes(widest)), dtype=torch.uint8)
        return self.layer_scratch(shape, rows), qa

    def layer_scratch(self, shape: LayerShape, rows: int) -> torch.Tensor:
        """Working memory for `decode_layer` on `rows` tokens (layer.c sizes it)."""
        return torch.empty(int(self._layer_scratch(ctypes.byref(shape), rows)), dtype=self.dtype)

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """F.silu(gate) * up for gate_up [rows, 2 * n] (gate first; copied if not contiguous) -> [rows, n]."""
        rows, width = gate_up.shape
        gate_up = gate_up.contiguous()
        out = torch.empty((rows, width // 2), dtype=gate_up.dtype)
        self._silu_mul(gate_up.data_ptr(), out.data_ptr(), rows, width // 2, torch.get_num_threads())
        return out

    def argmax(self, logits: torch.Tensor) -> list[int]:
        """The first index of each row's largest value (NaN counting as largest, as torch.max does);
        logits [rows, n] contiguous."""
        rows, n = logits.shape
        out = torch.empty(rows, dtype=torch.long)
        self._argmax(logits.data_ptr(), out.data_ptr(), rows, n, torch.get_num_threads())
        return out.tolist()

    def decode_attention(
        self,
        q: torch.Tensor,
        kv_cache: torch.Tensor,
        slots: torch.Tensor,
        lengths: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """One query token per sequence. q [seqs, heads, d] (heads contiguous, any token stride);
        kv_cache [slots, 2, kv_heads, d] contiguous; slots int64 [seqs, max_ctx]; lengths int64 [seqs]."""
        seqs, heads, d = q.shape
        out = torch.empty((seqs, heads, d), dtype=q.dtype)
        rc = self._attention(
            q.data_ptr(), q.stride(0), kv_cache.data_ptr(), slots.data_ptr(), slots.shape[1],
            lengths.data_ptr(), out.data_ptr(), seqs, heads, kv_cache.shape[2], d, scale,
            torch.get_num_threads(),
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"decode attention: unsupported heads {heads}/{kv_cache.shape[2]} or d {d}")
        return out


def supported_dtypes(flags: set[str]) -> list[torch.dtype]:
    avx512 = {"avx512f", "avx512bw", "avx512vl", "fma"} <= flags
    if not avx512:
        return []
    return [torch.float32, *([torch.bfloat16] if "avx512_bf16" in flags else [])]


def library(flags: set[str]) -> tuple[list[Path], list[str]]:
    """The AVX-512 library's sources and compiler flags for a CPU with `flags`: with the quantised-weight
    kernels (quant512.c) where it has AVX-512 VNNI."""
    if flags >= QUANT_CPU_FLAGS:
        return [*SOURCES, *QUANT_SOURCES], [*FLAGS, *QUANT_FLAGS]
    return SOURCES, FLAGS


def load_once(
    cache: dict[str, _K | None],
    key: str,
    problem: str | None,
    make: Callable[[], _K],
    what: str,
    fallback: str,
    logger: logging.Logger = log,
) -> _K | None:
    """The kernels `make()` builds and loads (once per `key`, under a lock), or None where `problem`
    (a reason, or None) rules them out or building fails; the reason is logged once to `logger`, as
    "`what`: why; `fallback`"."""
    with _lock:
        if key in cache:
            return cache[key]
        kernels: _K | None = None
        if platform.system() != "Linux" or platform.machine() != "x86_64":
            logger.info("%s: not x86-64 Linux; %s", what, fallback)
        elif problem is not None:
            logger.info("%s: %s; %s", what, problem, fallback)
        else:
            try:
                kernels = make()
            except (OSError, RuntimeError) as exc:
                logger.warning("%s unavailable, %s: %s", what, fallback, exc)
        cache[key] = kernels
        return kernels


def load_kernels(dtype: torch.dtype) -> CpuKernels | None:
    """The kernels for `dtype` (bf16 or fp32), or None where this machine cannot build or run them."""
    flags = cpu_flags()
    dtypes = supported_dtypes(flags)
    problem = None
    if dtype not in (torch.float32, torch.bfloat16):
        problem = f"none for {dtype}"
    elif dtype not in dtypes:
        problem = f"this CPU lacks AVX-512 for {dtype}"
    sources, build_flags = library(flags)

    def make() -> CpuKernels:
        return CpuKernels(ctypes.CDLL(str(build(sources=sources, flags=build_flags))), dtype)

    return load_once(_loaded, str(dtype), problem, make, "cpu kernels", "the engine keeps PyTorch/oneDNN ops")


def huge_page_buffer(nbytes: int) -> torch.Tensor:
    """A zeroed uint8 tensor of `nbytes` in private anonymous memory that asks for 2 MiB pages.

    Weights read from 4 KiB pages stream ~20% slower (TLB misses): 30 vs 37 GB/s measured here. With
    transparent huge pages set to `madvise` (the common default) only memory advised this way gets them;
    where they are off this is plain memory. The mapping lives as long as the tensor."""
    mapping = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        mapping.madvise(mmap.MADV_HUGEPAGE)
    whole = torch.frombuffer(mapping, dtype=torch.uint8)
    start = (-whole.data_ptr()) % HUGE_PAGE
    return whole[start : start + nbytes]


@torch.no_grad()
def move_to_huge_pages(params: Iterable[torch.Tensor]) -> int:
    """Move each parameter's data (each once, however often it is shared) into one huge-page buffer;
    returns the bytes moved."""
    unique = list({id(p): p for p in params}.values())
    align = 64
    sizes = [-(-p.numel() * p.element_size() // align) * align for p in unique]
    if not unique:
        return 0
    buffer = huge_page_buffer(sum(sizes))
    offset = 0
    for p, size in zip(unique, sizes, strict=True):
        nbytes = p.numel() * p.element_size()
        view = buffer[offset : offset + nbytes].view(p.dtype).view(p.shape)
        view.copy_(p.data)
        p.data = view
        offset += size
    return offset
