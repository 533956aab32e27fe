"""Quantised weights in a Linear: our AVX2 kernels (kernels/quant.c) for 1-4 rows and the
dequantise-and-multiply path against a float64 matmul of the same quantised weights, for both formats,
group 32 and one scale per output channel, tails, odd widths, bias on and off, 1 and 2 threads."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from openmaas.engine import kernels
from openmaas.engine.kernels import quant as quant_kernels
from openmaas.engine.models.linear import Linear, decode_step, set_quantized, share_dequant_scratch
from openmaas.engine.quant import FORMATS, QuantizedWeight, dequantize, quantize

KERNELS = quant_kernels.load_quant_kernels()
needs_avx2 = pytest.mark.skipif(KERNELS is None, reason="no AVX2/FMA/F16C or no C compiler: no quant kernels")
K_VALUES = [32, 96, 896 + 32]
GROUPS = [32, 0]  # 0: one scale per output channel (group = k)


@pytest.fixture
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def reference(x: torch.Tensor, q: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
    out = x.double() @ dequantize(q, torch.float64).t()
    return out + bias.double() if bias is not None else out


def activation_rounding_bound(x: torch.Tensor, q: QuantizedWeight) -> torch.Tensor:
    """The most that rounding x to int8 per run of 32 (scale amax / 127, half a step at most per value)
    can move each output: sum over runs of step / 2 x sum of |w| in the run. [m, n], float64."""
    m, k = x.shape
    step = x.double().reshape(m, k // 32, 32).abs().amax(-1) / 127  # [m, runs]
    w_runs = dequantize(q, torch.float64).abs().reshape(q.shape[0], k // 32, 32).sum(-1)  # [n, runs]
    return 0.5 * step @ w_runs.t()


def fp32_bound(x: torch.Tensor, q: QuantizedWeight) -> torch.Tensor:
    """fp32 summation error of k products: k * eps * sum |x w|, generously."""
    return x.shape[1] * 2**-23 * (x.double().abs() @ dequantize(q, torch.float64).abs().t()) + 1e-6


def cases(
    seed: int, fmt: str, k: int, group: int
) -> Iterator[tuple[torch.Tensor, QuantizedWeight, torch.Tensor | None]]:
    g = torch.Generator().manual_seed(seed)
    for n, bias in [(1, False), (7, True), (131, False)]:
        w = torch.randn(n, k, generator=g)
        q = quantize(w, fmt, group or k)  # type: ignore[arg-type]
        b = torch.randn(n, generator=g) if bias else None
        for m in (1, 2, 3, 4):
            yield torch.randn(m, k, generator=g) * 2, q, b


@needs_avx2
@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_q8_kernel_is_within_its_activation_rounding_of_a_float64_matmul(
    fmt: str, k: int, group: int, threads: int
) -> None:
    """The kept kernel rounds activations to int8 per run of 32 (as llama.cpp does): each output stays
    within the worst case that rounding allows, plus fp32 summation."""
    assert KERNELS is not None
    for x, q, b in cases(k + group + threads, fmt, k, group):
        y = KERNELS.matmul(x, q, b)
        assert y.shape == (x.shape[0], q.shape[0]) and y.dtype == torch.float32
        error = (y.double() - reference(x, q, b)).abs()
        bound = activation_rounding_bound(x, q) + fp32_bound(x, q)
        assert (error <= bound).all(), (error - bound).max()


@needs_avx2
@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_f32_kernel_and_dequantise_match_a_float64_matmul(fmt: str, k: int, group: int, threads: int) -> None:
    """The fp32-activation variant (kept for comparison) and the dequantising kernel are exact up to
    fp32 summation."""
    kernels = quant_kernels.load_quant_kernels(quant_kernels.F32_ACTIVATIONS)
    assert kernels is not None and KERNELS is not None
    for x, q, b in cases(k * 7 + group + threads, fmt, k, group):
        error = (kernels.matmul(x, q, b).double() - reference(x, q, b)).abs()
        assert (error <= fp32_bound(x, q)).all(), error.max()
    n = q.shape[0]
    out = torch.empty(n - 3, k)
    KERNELS.dequantize_rows(q, 3, n - 3, out)
    assert torch.equal(out.double(), dequantize(q, torch.float64)[3:])  # scale x value: exact in fp32
    # Straight to bf16 (prefill's bf16 matmuls): the same bits as PyTorch rounding the fp32 values.
    half = torch.empty(n - 3, k, dtype=torch.bfloat16)
    KERNELS.dequantize_rows(q, 3, n - 3, half)
    assert torch.equal(half.view(torch.int16), out.to(torch.bfloat16).view(torch.int16))


@needs_avx2
def test_dequantising_to_bf16_rounds_as_pytorch_does_ties_and_nan_included() -> None:
    """Scales chosen for bf16's rounding: exact ties (value 1 x scale 1 + 2^-8 drops exactly half a
    bf16 step) to even both ways, negatives, -0, the largest fp16, a subnormal, infinities and NaN,
    each times every int8 value."""
    assert KERNELS is not None
    picked = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), -1.0, 65504.0, 6e-8, float("inf"), float("-inf")]
    picked += [float("nan"), 0.5]
    values = torch.arange(-128, 128, dtype=torch.int16).to(torch.int8).repeat(len(picked), 1)
    scales = torch.tensor(picked, dtype=torch.float16).repeat_interleave(256 // 32).view(len(picked), -1)
    q = QuantizedWeight("int8", values, scales.contiguous(), 32)
    fp32 = torch.empty(len(picked), 256)
    KERNELS.dequantize_rows(q, 0, len(picked), fp32)
    half = torch.empty(len(picked), 256, dtype=torch.bfloat16)
    KERNELS.dequantize_rows(q, 0, len(picked), half)
    assert torch.equal(half.view(torch.int16), fp32.to(torch.bfloat16).view(torch.int16))
    one = 128 + 1  # the column of value 1
    ties = half.view(torch.int16)[:2, one].tolist()
    assert ties == [0x3F80, 0x3F82]  # 1 + 2^-8 down to the even 1.0; 1 + 3 x 2^-8 up to 1 + 2^-6
    assert half.view(torch.int16)[3, 128].item() == -0x8000  # 0 x -1: -0 kept
    assert half.view(torch.int16)[8, one].item() == -1  # NaN: 0xffff, as PyTorch's vectorised copy


@needs_avx2
def test_kernel_takes_one_to_four_cpu_rows_only() -> None:
    assert KERNELS is not None
    q = quantize(torch.randn(8, 64), "int8")
    assert KERNELS.fits(torch.zeros(1, 64)) and KERNELS.fits(torch.zeros(4, 64))
    assert not KERNELS.fits(torch.zeros(5, 64)) and not KERNELS.fits(torch.zeros(0, 64))
    with pytest.raises(ValueError, match="bad shapes"):
        KERNELS.matmul(torch.zeros(5, 64), q, None)


@pytest.mark.parametrize("kernels", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
@torch.inference_mode()
def test_a_quantised_linear_computes_its_quantised_weight_for_any_row_count(fmt: str, kernels: bool) -> None:
    """set_quantized frees the float weight; 1-4 rows take the kernel (when it loads), more rows and
    the kernel-less layer dequantise slices (here 7 rows at a time) into the shared scratch."""
    if kernels and KERNELS is None:
        pytest.skip("no quant kernels here")
    torch.manual_seed(0)
    layer = Linear(96, 37, bias=True)
    q = quantize(layer.weight, fmt)  # type: ignore[arg-type]
    set_quantized(layer, q, kernels=kernels)
    share_dequant_scratch(nn.Sequential(layer), chunk_elements=96 * 7, half=False)
    assert layer.weight.numel() == 0 and layer.weight.dtype == torch.float32
    assert (layer.quant_kernels is not None) == kernels
    for rows in (1, 3, 4, 5, 40):
        x = torch.randn(rows, 96)
        error = (layer(x).double() - reference(x, q, layer.bias)).abs()
        kernel_rows = kernels and rows <= 4
        bound = fp32_bound(x, q) + (activation_rounding_bound(x, q) if kernel_rows else 0)
        assert (error <= bound).all(), (rows, error.max())
    bf16 = layer.to(torch.bfloat16)(torch.randn(2, 96).to(torch.bfloat16))  # a bf16 model's activations
    assert bf16.dtype == torch.bfloat16 and bf16.shape == (2, 37)


def test_set_quantized_refuses_a_weight_of_another_shape() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        set_quantized(Linear(64, 8), quantize(torch.randn(8, 32), "int8"))


def test_without_avx2_the_kernels_are_not_loaded_and_the_reason_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(quant_kernels, "_loaded", {})
    monkeypatch.setattr(quant_kernels, "cpu_flags", lambda: {"sse4_2", "fma"})
    monkeypatch.setattr(kernels.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(kernels.platform, "system", lambda: "Linux")
    with caplog.at_level(logging.INFO, logger="openmaas.engine.kernels.quant"):
        assert quant_kernels.load_quant_kernels() is None
    assert "lacks avx2, f16c" in caplog.text
    layer = Linear(64, 8)
    set_quantized(layer, quantize(layer.weight, "int4"))
    assert layer.quant_kernels is None
    x = torch.randn(2, 64)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), x @ dequantize(layer.quantized).t() + layer.bias)  # type: ignore[arg-type]


# ---- quant512.c: the AVX-512 VNNI kernels, in the AVX-512 library where the CPU has VNNI ----

VNNI = {dtype: kernels.load_kernels(dtype) for dtype in kernels.supported_dtypes(kernels.cpu_flags())}
VNNI_DTYPES = [dtype for dtype, k in VNNI.items() if k is not None and k.quantized]
needs_vnni = pytest.mark.skipif(not VNNI_DTYPES, reason="no AVX-512 VNNI or no C compiler: no quant512.c")
# (k, group): odd run counts (the int8 tail), 1-3 runs past a multiple of four (the int4 tail), groups
# of one run, several runs and the whole row.
SHAPES = [(32, 32), (96, 32), (96, 96), (160, 32), (448, 64), (928, 32), (928, 0)]


@needs_vnni
@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("dtype", VNNI_DTYPES)
@pytest.mark.parametrize("k,group", SHAPES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_vnni_kernel_is_within_its_activation_rounding_of_a_float64_matmul(
    fmt: str, k: int, group: int, dtype: torch.dtype, threads: int
) -> None:
    """quant512.c rounds activations to int8 per run of 32 as quant.c does: each output stays within
    that rounding's worst case plus fp32 summation (and, in bf16, the output's own rounding)."""
    vnni = VNNI[dtype]
    assert vnni is not None
    for x, q, b in cases(k + group + threads + 5, fmt, k, group):
        x = x.to(dtype)
        b = None if b is None else b.to(dtype)
        assert vnni.fits_qgemv(x)
        y = vnni.qgemv(x, q, b)
        assert y.shape == (x.shape[0], q.shape[0]) and y.dtype == dtype
        ref = reference(x, q, b)
        bound = activation_rounding_bound(x, q) + fp32_bound(x, q)
        if dtype == torch.bfloat16:
            bound = bound * (1 + 2**-8) + ref.abs() * 2**-8  # round to nearest bf16
        error = (y.double() - ref).abs()
        assert (error <= bound).all(), (error - bound).max()


@needs_vnni
@pytest.mark.parametrize("fmt", FORMATS)
@torch.inference_mode()
def test_vnni_kernel_takes_the_same_rounded_activations_as_the_avx2_one(fmt: str) -> None:
    """Both kernels quantise activations the same way and sum each run exactly in integer: in fp32 they
    differ by summation order only."""
    vnni = VNNI[torch.float32]
    assert vnni is not None and KERNELS is not None
    g = torch.Generator().manual_seed(3)
    q = quantize(torch.randn(300, 896, generator=g), fmt)  # type: ignore[arg-type]
    for m in (1, 4):
        x = torch.randn(m, 896, generator=g)
        torch.testing.assert_close(vnni.qgemv(x, q, None), KERNELS.matmul(x, q, None), rtol=1e-5, atol=1e-4)


@needs_vnni
@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("dtype", VNNI_DTYPES)
@pytest.mark.parametrize("k,group", [(96, 32), (160, 32), (928, 0), (4864, 32)])
@pytest.mark.parametrize("fmt", FORMATS)
@torch.inference_mode()
def test_vnni_kernel_on_five_to_sixteen_rows_matches_float64_and_each_row_alone(
    fmt: str, k: int, group: int, dtype: torch.dtype, threads: int
) -> None:
    """5-16 rows (weights read in blocks, rows in tiles of four over each block): each output within the
    activation rounding of a float64 matmul, and each row bit for bit what a 1-row call gives it. n
    spans several weight blocks (and a partial one) at k = 4864."""
    vnni = VNNI[dtype]
    assert vnni is not None
    g = torch.Generator().manual_seed(k + group + threads)
    for n, bias in [(7, True), (131, False)]:
        q = quantize(torch.randn(n, k, generator=g), fmt, group or k)  # type: ignore[arg-type]
        b = torch.randn(n, generator=g).to(dtype) if bias else None
        for m in (5, 8, 13, 16):
            x = (torch.randn(m, k, generator=g) * 2).to(dtype)
            assert vnni.fits_qgemv(x)
            y = vnni.qgemv(x, q, b)
            assert y.shape == (m, n) and y.dtype == dtype
            ref = reference(x, q, b)
            bound = activation_rounding_bound(x, q) + fp32_bound(x, q)
            if dtype == torch.bfloat16:
                bound = bound * (1 + 2**-8) + ref.abs() * 2**-8
            error = (y.double() - ref).abs()
            assert (error <= bound).all(), (error - bound).max()
            alone = torch.cat([vnni.qgemv(x[i : i + 1], q, b) for i in range(m)])
            assert torch.equal(y, alone)


@needs_vnni
def test_vnni_kernel_takes_one_to_sixteen_contiguous_rows_of_its_dtype() -> None:
    dtype = VNNI_DTYPES[0]
    vnni = VNNI[dtype]
    assert vnni is not None
    assert vnni.qgemv_max_rows == 16 and vnni.max_rows == 4  # the fused layer (layer.c) stays at 4
    q = quantize(torch.randn(8, 64), "int4")
    for rows in (1, 4, 5, 16):
        assert vnni.fits_qgemv(torch.zeros(rows, 64, dtype=dtype))
    assert not vnni.fits_qgemv(torch.zeros(17, 64, dtype=dtype))
    assert not vnni.fits_qgemv(torch.zeros(4, 64, dtype=dtype).t())
    assert not vnni.fits_qgemv(torch.zeros(2, 64, dtype=torch.float16))
    with pytest.raises(ValueError, match="bad shapes"):
        vnni.qgemv(torch.zeros(17, 64, dtype=dtype), q, None)


@needs_vnni
@torch.inference_mode()
def test_a_quantised_linear_takes_the_vnni_kernel_where_it_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A quantised layer given the dtype's kernels (as enable_cpu_kernels does) runs 1-4 rows through
    quant512.c, and 5-16 too in a decode-only step (not in prefill, whose KV cache must not depend on how
    the prompt was split); more rows through dequantise-and-multiply."""
    dtype = VNNI_DTYPES[0]
    layer = Linear(96, 37, bias=True).to(dtype)
    q = quantize(layer.weight, "int8")
    set_quantized(layer, q)
    layer.kernels = VNNI[dtype]
    calls = []
    original = kernels.CpuKernels.qgemv

    def counted(self: kernels.CpuKernels, *args: object) -> torch.Tensor:
        calls.append(args)
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(kernels.CpuKernels, "qgemv", counted)
    for decoding, rows, kernel in [
        (False, 1, True), (False, 4, True), (False, 6, False),
        (True, 1, True), (True, 6, True), (True, 16, True), (True, 17, False),
    ]:  # fmt: skip
        x = torch.randn(rows, 96).to(dtype)
        before = len(calls)
        with decode_step(decoding):
            y = layer(x)
        assert len(calls) - before == kernel, (decoding, rows)
        error = (y.double() - reference(x, q, layer.bias)).abs()
        assert (error <= activation_rounding_bound(x, q) + fp32_bound(x, q) + 0.02).all()


def test_the_vnni_kernels_are_built_only_for_cpus_with_vnni() -> None:
    base = {"avx512f", "avx512bw", "avx512vl", "fma", "avx512_bf16", "f16c"}
    sources, flags = kernels.library(base)
    assert sources == kernels.SOURCES and flags == kernels.FLAGS
    sources, flags = kernels.library(base | {"avx512_vnni"})
    assert sources[-1].name == "quant512.c" and "-mavx512vnni" in flags


@pytest.mark.skipif(not VNNI_DTYPES, reason="no AVX-512 library here")
def test_without_vnni_the_library_has_no_quantised_kernels_and_layers_take_the_avx2_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On an AVX-512 CPU without VNNI the library is built without quant512.c: CpuKernels says so and a
    quantised layer keeps quant.c's AVX2 kernel (or dequantises)."""
    monkeypatch.setattr(kernels, "_loaded", {})
    flags = kernels.cpu_flags() - {"avx512_vnni"}
    monkeypatch.setattr(kernels, "cpu_flags", lambda: flags)
    plain = kernels.load_kernels(torch.float32)
    assert plain is not None and not plain.quantized
    layer = Linear(64, 8)
    set_quantized(layer, quantize(layer.weight, "int8"))
    layer.kernels = plain
    x = torch.randn(2, 64)
    assert not plain.fits_qgemv(x)
    with torch.inference_mode():
        expected = KERNELS.matmul(x, layer.quantized, layer.bias) if KERNELS else None  # type: ignore[arg-type]
        got = layer(x)
    if expected is not None:
        assert torch.equal(got, expected)
