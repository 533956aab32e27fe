"""`python -m openmaas.engine.kernels`: build the decode kernels now (make install runs it) and say where
they are, or why this machine runs without them: the AVX-512 library (gemv.c, ops.c, layer.c, and
quant512.c for quantised weights where the CPU has AVX-512 VNNI) and the AVX2 library for quantised
weights (quant.c)."""

from __future__ import annotations

import sys

from openmaas.engine import kernels
from openmaas.engine.kernels import quant


def main() -> int:
    if missing := quant.NEEDED_FLAGS - kernels.cpu_flags():
        print(f"quantised-weight kernel: this CPU lacks {', '.join(sorted(missing))}; layers dequantise")
    else:
        try:
            print(f"quantised-weight kernel (int8, int4; AVX2): {quant.build()}")
        except (OSError, RuntimeError) as exc:
            print(f"quantised-weight kernel not built, layers dequantise: {exc}")
    dtypes = kernels.supported_dtypes(kernels.cpu_flags())
    if not dtypes:
        print("decode kernel: this CPU lacks AVX-512; the engine uses oneDNN")
        return 0
    sources, flags = kernels.library(kernels.cpu_flags())
    try:
        path = kernels.build(sources=sources, flags=flags)
    except (OSError, RuntimeError) as exc:
        print(f"decode kernel not built, the engine uses oneDNN: {exc}")
        return 0
    names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
    quantized = "with" if sources != kernels.SOURCES else "without (no AVX-512 VNNI)"
    print(f"decode kernel ({names}; {quantized} int8/int4 weights): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
