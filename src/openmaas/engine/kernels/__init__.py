"""Our CPU matmul kernel for decode steps (`gemv.c`), built with the system's C compiler at first use.

A decode step multiplies one to four activation rows by every weight matrix: it is bound by how fast
the weights stream from memory. oneDNN's kernels reach 20-35 GB/s there on a 2-core Zen 4; ours, reading
each thread's weight rows as one sequential stream from memory backed by 2 MiB pages, 35-70 GB/s in
bf16 and 37-44 GB/s in fp32 (see gemv.c for how).

The library is compiled once per source, compiler and flag set into a per-user cache directory
(`OPENMAAS_KERNEL_DIR`, else `$XDG_CACHE_HOME/openmaas/kernels`, else `~/.cache/openmaas/kernels`) and
loaded with ctypes. Where it cannot be built (no C compiler, no OpenMP, not x86-64 Linux) or the CPU
lacks AVX-512, `load_gemv()` returns None and the engine keeps oneDNN; the reason is logged once.
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
from collections.abc import Iterable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("gemv.c")
FLAGS = [
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
_loaded: dict[str, Gemv | None] = {}


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


def build(directory: Path | None = None) -> Path:
    """Compile gemv.c (once per source, compiler and flags) and return the library's path. Raises
    RuntimeError with the compiler's message when it cannot be built."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    source = SOURCE.read_bytes()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    digest = hashlib.sha256(source + " ".join(FLAGS).encode() + version.encode()).hexdigest()[:16]
    directory = directory or cache_dir()
    target = directory / f"gemv-{digest}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Compile beside the target and rename into place, so a concurrent loader never sees half a file.
    fd, tmp = tempfile.mkstemp(prefix=".gemv-", suffix=".so", dir=directory)
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


class Gemv:
    """y = x @ W^T + b for 1-4 contiguous rows of bf16 or fp32 activations, on the intra-op threads."""

    def __init__(self, lib: ctypes.CDLL, dtypes: Iterable[torch.dtype]) -> None:
        self.max_rows = int(lib.omaas_gemv_max_rows())
        self.functions = {}
        for dtype in dtypes:
            fn = getattr(lib, "omaas_gemv_bf16" if dtype == torch.bfloat16 else "omaas_gemv_f32")
            fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_int]
            fn.restype = ctypes.c_int
            self.functions[dtype] = fn

    def fits(self, x: torch.Tensor, weight: torch.Tensor) -> bool:
        rows = x.shape[0]
        return (
            x.dim() == 2
            and rows <= self.max_rows
            and (rows == 1 or rows * x.shape[1] * x.element_size() <= MAX_ACTIVATION_BYTES)
            and x.dtype in self.functions
            and x.is_contiguous()
        )

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        m, k = x.shape
        n = weight.shape[0]
        y = torch.empty((m, n), dtype=x.dtype)
        rc = self.functions[x.dtype](
            x.data_ptr(),
            weight.data_ptr(),
            None if bias is None else bias.data_ptr(),
            y.data_ptr(),
            m,
            n,
            k,
            torch.get_num_threads(),
        )
        if rc != 0:
            raise ValueError(f"gemv: bad shapes x {tuple(x.shape)}, weight {tuple(weight.shape)}")
        return y


def supported_dtypes(flags: set[str]) -> list[torch.dtype]:
    avx512 = {"avx512f", "avx512bw", "avx512vl", "fma"} <= flags
    if not avx512:
        return []
    return [torch.float32, *([torch.bfloat16] if "avx512_bf16" in flags else [])]


def load_gemv(dtype: torch.dtype) -> Gemv | None:
    """The kernel for `dtype` (bf16 or fp32), or None where this machine cannot build or run it."""
    key = str(dtype)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        gemv: Gemv | None = None
        dtypes = supported_dtypes(cpu_flags())
        if platform.system() != "Linux" or platform.machine() != "x86_64":
            log.info("gemv kernel: not x86-64 Linux; matmuls stay on oneDNN")
        elif dtype not in (torch.float32, torch.bfloat16):
            log.info("gemv kernel: none for %s; matmuls stay on oneDNN", dtype)
        elif dtype not in dtypes:
            log.info("gemv kernel: this CPU lacks AVX-512 for %s; matmuls stay on oneDNN", dtype)
        else:
            try:
                gemv = Gemv(ctypes.CDLL(str(build())), [dtype])
            except (OSError, RuntimeError) as exc:
                log.warning("gemv kernel unavailable, matmuls stay on oneDNN: %s", exc)
        _loaded[key] = gemv
        return gemv


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
