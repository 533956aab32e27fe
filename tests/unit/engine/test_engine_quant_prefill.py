"""The prefill / larger-batch path of quantised layers (models/linear.py `_dequantized_forward`) on a CPU
with native bf16: each weight slice dequantised and rounded to bf16, multiplied by bf16 activations with
oneDNN's bf16 matmul. Checked against a float64 matmul of the same quantised weights within the rounding
of a bf16 model (weights, activations and outputs to bf16), for both formats, slices that split the
output rows unevenly, bias on and off; and chosen by default only where the CPU has fast bf16."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from openmaas.engine.models.linear import Linear, cpu_has_fast_half, set_quantized, share_dequant_scratch
from openmaas.engine.quant import FORMATS, dequantize, quantize

BF16_EPS = 2.0**-8  # bf16's relative rounding is at most half of this


def quantised_layer(fmt: str, k: int, n: int, bias: bool, kernels: bool, seed: int) -> Linear:
    torch.manual_seed(seed)
    layer = Linear(k, n, bias=bias)
    set_quantized(layer, quantize(layer.weight, fmt), kernels=kernels)  # type: ignore[arg-type]
    return layer


@pytest.mark.parametrize("kernels", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
@torch.inference_mode()
def test_bf16_prefill_path_is_within_bf16_rounding_of_a_float64_matmul(
    fmt: str, bias: bool, kernels: bool
) -> None:
    layer = quantised_layer(fmt, 160, 53, bias, kernels, seed=1)
    assert layer.quantized is not None
    share_dequant_scratch(
        nn.Sequential(layer), chunk_elements=160 * 10, half=True
    )  # 6 slices, the last 3 rows
    assert layer.upcast is not None and layer.upcast.half is not None
    w64 = dequantize(layer.quantized, torch.float64)
    for rows, dtype in [(5, torch.float32), (40, torch.float32), (33, torch.bfloat16)]:
        x = (torch.randn(rows, 160) * 3).to(dtype)
        out = layer(x)
        assert out.dtype == dtype and out.shape == (rows, 53)
        ref = x.double() @ w64.t() + (layer.bias.double() if layer.bias is not None else 0)
        magnitude = x.double().abs() @ w64.abs().t()
        bound = BF16_EPS * (magnitude + ref.abs()) + 1e-6  # weight + activation rounding; output rounding
        error = (out.double() - ref).abs()
        assert (error <= bound).all(), (rows, dtype, (error / bound).max())


@torch.inference_mode()
def test_bf16_prefill_path_rounds_where_the_fp32_path_does_not() -> None:
    """The two paths really differ (the bf16 one is taken): fp32 is exact to ~1e-6, bf16 is not."""
    layer = quantised_layer("int8", 256, 64, False, True, seed=2)
    assert layer.quantized is not None
    x = torch.randn(16, 256)
    ref = x.double() @ dequantize(layer.quantized, torch.float64).t()
    errors = {}
    for half in (False, True):
        share_dequant_scratch(nn.Sequential(layer), half=half)
        errors[half] = float((layer(x).double() - ref).abs().max())
    assert errors[False] < 1e-4 < errors[True]


@pytest.mark.parametrize("kernels", [False, True])
def test_bf16_is_the_default_only_with_our_kernels_on_a_cpu_with_fast_bf16(kernels: bool) -> None:
    """Kernel-less layers (cpu_kernels False) keep the float model's arithmetic."""
    layer = quantised_layer("int4", 64, 32, False, kernels, seed=3)
    share_dequant_scratch(nn.Sequential(layer))
    assert layer.upcast is not None
    fast = cpu_has_fast_half(torch.bfloat16) and torch.backends.mkldnn.is_available()
    assert (layer.upcast.half is not None) == (fast and layer.quant_kernels is not None)
    assert layer.upcast.half is None or layer.upcast.half.dtype == torch.bfloat16


@pytest.mark.parametrize("half", [False, True])
@torch.inference_mode()
def test_the_output_is_row_major_as_the_kernels_after_it_read_it(half: bool) -> None:
    """Our C kernels (SiLU gate, RoPE, attention) read a projection's output as contiguous rows; a
    transposed view from this path gave a quantised engine wrong tokens in every prefill of 5+."""
    layer = quantised_layer("int4", 64, 96, True, True, seed=4)
    share_dequant_scratch(nn.Sequential(layer), half=half)
    out = layer(torch.randn(3, 7, 64))
    assert out.shape == (3, 7, 96) and out.is_contiguous()
