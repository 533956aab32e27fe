"""Weight-only quantised weights: their two formats, quantising a float weight into them, and the
float reference every quantised kernel is tested against.

Both formats are laid out so that a GGUF file's Q8_0 and Q4_0 blocks load into them by splitting
each block into its scale and its values, never through floats:

- `int8`: `qweight` int8 [n, k]; a value is `qweight * scale`. llama.cpp's Q8_0 is group size 32;
  one scale per output channel is group size k.
- `int4`: `qweight` uint8 [n, k // 2], each run of 32 values packed in 16 bytes as llama.cpp packs a
  Q4_0 block: byte j of a run holds value j in its low nibble and value j + 16 in its high nibble; a
  value is `(nibble - 8) * scale`.

`scales` is float16 [n, k // group_size]: one per `group_size` consecutive inputs of an output row.
`group_size` is a multiple of 32 that divides k (32 for GGUF's formats).

Decode steps (1-4 rows) multiply them with kernels/quant512.c on AVX-512 VNNI CPUs (also inside the
one-call decode layer, kernels/layer.c) or kernels/quant.c on AVX2 ones; larger batches dequantise
slices (models/linear.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

QuantFormat = Literal["int8", "int4"]
FORMATS: tuple[QuantFormat, ...] = ("int8", "int4")
RUN = 32  # values per packed run (and the smallest group)


@dataclass(frozen=True)
class QuantizedWeight:
    """One [out_features, in_features] weight matrix in a quantised format (see the module doc)."""

    format: QuantFormat
    qweight: torch.Tensor
    scales: torch.Tensor
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        n, packed = self.qweight.shape
        return n, packed * 2 if self.format == "int4" else packed

    @property
    def nbytes(self) -> int:
        return self.qweight.nbytes + self.scales.nbytes

    def __post_init__(self) -> None:
        n, k = self.shape
        expected = torch.uint8 if self.format == "int4" else torch.int8
        if self.format not in FORMATS:
            raise ValueError(f"unknown quantisation format {self.format!r}; use one of {FORMATS}")
        if self.qweight.dtype != expected or self.qweight.dim() != 2:
            raise ValueError(f"{self.format} values must be a 2-D {expected} tensor")
        if self.group_size % RUN or k % self.group_size:
            raise ValueError(f"group size {self.group_size} must be a multiple of {RUN} dividing {k}")
        if self.scales.dtype != torch.float16 or tuple(self.scales.shape) != (n, k // self.group_size):
            raise ValueError(f"scales must be float16 of shape {(n, k // self.group_size)}")


def check_shape(format: QuantFormat, shape: tuple[int, int], group_size: int) -> str | None:
    """Why a [n, k] weight cannot be quantised to `format` with `group_size`, or None if it can."""
    if format not in FORMATS:
        return f"unknown quantisation format {format!r}; use one of {', '.join(FORMATS)}"
    if group_size <= 0 or group_size % RUN:
        return f"group size must be a positive multiple of {RUN}"
    if shape[1] % group_size:
        return f"the weight's {shape[1]} inputs are not a multiple of the group size {group_size}"
    return None


@torch.no_grad()
def quantize(weight: torch.Tensor, format: QuantFormat, group_size: int = RUN) -> QuantizedWeight:
    """`weight` [n, k] (any float dtype) quantised with one scale per group of `group_size` inputs:
    int8 with round-to-nearest at amax / 127; int4 as llama.cpp's Q4_0 (the value of largest magnitude
    maps to -8). Values are computed against the float16-rounded scale the kernels will use."""
    if weight.dim() != 2:
        raise ValueError("only 2-D weights are quantised")
    n, k = weight.shape
    if (problem := check_shape(format, (n, k), group_size)) is not None:
        raise ValueError(problem)
    groups = weight.detach().to(torch.float32).reshape(n, k // group_size, group_size)
    if format == "int8":
        scale = (groups.abs().amax(dim=-1) / 127.0).to(torch.float16)
        inverse = _inverse(scale)
        values = torch.round(groups * inverse[..., None]).clamp(-127, 127).to(torch.int8)
        return QuantizedWeight("int8", values.reshape(n, k), scale, group_size)
    index = groups.abs().argmax(dim=-1, keepdim=True)
    extreme = torch.gather(groups, -1, index).squeeze(-1)
    scale = (extreme / -8.0).to(torch.float16)
    inverse = _inverse(scale)
    nibbles = torch.floor(groups * inverse[..., None] + 8.5).clamp(0, 15).to(torch.uint8)
    runs = nibbles.reshape(n, k // RUN, 2, RUN // 2)
    packed = runs[:, :, 0] | (runs[:, :, 1] << 4)
    return QuantizedWeight("int4", packed.reshape(n, k // 2).contiguous(), scale, group_size)


def _inverse(scale: torch.Tensor) -> torch.Tensor:
    s = scale.to(torch.float32)
    return torch.where(s == 0, torch.zeros_like(s), 1.0 / torch.where(s == 0, torch.ones_like(s), s))


def unpack_values(q: QuantizedWeight) -> torch.Tensor:
    """The integer values of `q` as int8 [n, k] (int4 nibbles already minus 8)."""
    if q.format == "int8":
        return q.qweight
    n, k = q.shape
    runs = q.qweight.reshape(n, k // RUN, RUN // 2)
    low = (runs & 0x0F).to(torch.int8) - 8
    high = (runs >> 4).to(torch.int8) - 8
    return torch.cat([low, high], dim=-1).reshape(n, k)


def dequantize(q: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float weight `q` stands for: [n, k] in `dtype` (float64 for a reference)."""
    n, k = q.shape
    values = unpack_values(q).to(dtype).reshape(n, k // q.group_size, q.group_size)
    return (values * q.scales.to(dtype)[..., None]).reshape(n, k)
