"""`python -m openmaas.engine.kernels`: build the decode kernel now (make install runs it) and say where
it is, or why this machine runs without it."""

from __future__ import annotations

import sys

from openmaas.engine import kernels


def main() -> int:
    dtypes = kernels.supported_dtypes(kernels.cpu_flags())
    if not dtypes:
        print("decode kernel: this CPU lacks AVX-512; the engine uses oneDNN")
        return 0
    try:
        path = kernels.build()
    except (OSError, RuntimeError) as exc:
        print(f"decode kernel not built, the engine uses oneDNN: {exc}")
        return 0
    names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
    print(f"decode kernel ({names}): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
