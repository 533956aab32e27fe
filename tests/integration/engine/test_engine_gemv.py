"""Our decode matmul kernel (openmaas.engine.kernels, C built with the system compiler): exact shapes,
tails and threads against a float64 reference, the engine running through it, huge-page weights staying
tied, and the fallback where it cannot be built."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from openmaas.engine import kernels
from openmaas.engine.models.linear import Linear, enable_gemv

from .conftest import make_engine, random_prompts

DTYPES = kernels.supported_dtypes(kernels.cpu_flags())
needs_kernel = pytest.mark.skipif(not DTYPES, reason="CPU without AVX-512: the engine keeps oneDNN")


def reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    out = x.double() @ w.double().t()
    return out + b.double() if b is not None else out


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("k", [1, 15, 31, 33, 64, 200])
def test_kernel_matches_a_float64_matmul_for_every_row_count_and_tail(
    dtype: torch.dtype, m: int, k: int
) -> None:
    gemv = kernels.load_gemv(dtype)
    assert gemv is not None
    g = torch.Generator().manual_seed(m * 1000 + k)
    for n, bias, threads in [(1, False, 2), (7, True, 2), (130, True, 1), (130, False, 3)]:
        w = torch.randn(n, k, generator=g).to(dtype)
        x = torch.randn(m, k, generator=g).to(dtype)
        b = torch.randn(n, generator=g).to(dtype) if bias else None
        torch.set_num_threads(threads)
        try:
            y = gemv(x, w, b)
        finally:
            torch.set_num_threads(2)
        assert y.shape == (m, n) and y.dtype == dtype
        ref = reference(x, w, b)
        if dtype == torch.float32:
            torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * k)
        else:
            # fp32 sums of exact bf16 products, rounded once to bf16: within one bf16 rounding.
            torch.testing.assert_close(y.double(), ref, rtol=2**-8, atol=1e-5 * k)


@needs_kernel
def test_kernel_rounds_bf16_as_pytorch_does() -> None:
    """Ties go to even and NaN stays NaN: the rounding of a single product equals PyTorch's."""
    gemv = kernels.load_gemv(torch.bfloat16)
    if gemv is None:
        pytest.skip("no AVX512-BF16")
    values = torch.tensor([1.0 + 2**-8, 1.0 + 3 * 2**-8, -(1.0 + 2**-8), 3.0, float("nan")])
    for v in values:
        # v itself is not a bf16 value; reach it as a bias-free sum of two exact bf16 terms.
        hi = v.to(torch.bfloat16)
        lo = (v - hi.float()).to(torch.bfloat16)
        x = torch.stack([hi, lo]).view(1, 2)
        y = gemv(x, torch.ones(1, 2, dtype=torch.bfloat16), None)
        expected = (hi.float() + lo.float()).to(torch.bfloat16)
        assert torch.equal(y.view(-1).isnan(), expected.view(-1).isnan())
        if not expected.isnan():
            assert y.item() == expected.item(), float(v)


@needs_kernel
def test_kernel_refuses_rows_it_does_not_handle() -> None:
    gemv = kernels.load_gemv(DTYPES[0])
    assert gemv is not None
    w = torch.zeros(8, 16, dtype=DTYPES[0])
    assert not gemv.fits(torch.zeros(gemv.max_rows + 1, 16, dtype=DTYPES[0]), w)
    assert not gemv.fits(torch.zeros(16, 2, dtype=DTYPES[0]).t(), w)  # not contiguous
    assert not gemv.fits(torch.zeros(1, 16, dtype=torch.float16), w)
    with pytest.raises(ValueError, match="bad shapes"):
        gemv(torch.zeros(gemv.max_rows + 1, 16, dtype=DTYPES[0]), w, None)


@needs_kernel
@torch.inference_mode()
def test_enable_gemv_keeps_tied_weights_tied_on_huge_page_memory() -> None:
    torch.manual_seed(0)
    embed = nn.Embedding(40, 32)
    head = Linear(32, 40, bias=False)
    head.weight = embed.weight
    proj = Linear(32, 48, bias=True)
    model = nn.ModuleDict({"embed": embed, "head": head, "proj": proj})
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert enable_gemv(model, torch.float32)
    assert head.weight is embed.weight and head.gemv is not None and proj.gemv is not None
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
    assert embed.weight.data_ptr() % 64 == 0 and proj.weight.data_ptr() % 64 == 0
    x = torch.randn(2, 32)
    torch.testing.assert_close(proj(x), x @ before["proj.weight"].t() + before["proj.bias"])


def test_build_failure_falls_back_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(kernels, "_compiler", lambda: str(tmp_path / "no-such-compiler"))
    with pytest.raises((RuntimeError, OSError)):
        kernels.build(tmp_path)
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob(".gemv-*"))  # nothing half-written
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setattr(kernels, "_compiler", lambda: None)
    monkeypatch.setattr(
        kernels, "cpu_flags", lambda: {"avx512f", "avx512bw", "avx512vl", "fma", "avx512_bf16"}
    )
    with caplog.at_level(logging.INFO, logger="openmaas.engine.kernels"):
        assert kernels.load_gemv(torch.float32) is None
    if kernels.platform.machine() == "x86_64":
        assert "no C compiler" in caplog.text


def test_compiler_errors_leave_no_partial_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if kernels._compiler() is None:
        pytest.skip("no C compiler")
    bad = tmp_path / "bad.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(kernels, "SOURCE", bad)
    with pytest.raises(RuntimeError, match="failed"):
        kernels.build(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


@needs_kernel
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_engine_decodes_through_the_kernel_with_the_same_tokens(
    model_dirs: dict[str, Path], arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openmaas.engine import SamplingParams

    calls = {"n": 0}
    original = kernels.Gemv.__call__

    def counting(
        self: kernels.Gemv, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None
    ) -> torch.Tensor:
        calls["n"] += 1
        return original(self, x, w, b)

    monkeypatch.setattr(kernels.Gemv, "__call__", counting)
    prompts = random_prompts([5, 19, 33], seed=3)
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    outputs = {}
    for gemv in (True, False):
        engine = make_engine(model_dirs[arch], cpu_gemv=gemv)
        layers = [m for m in engine.runner.model.modules() if isinstance(m, Linear)]
        assert all((m.gemv is not None) == gemv for m in layers)
        outputs[gemv] = [r[0].token_ids for r in engine.generate(prompts, params)]
    assert calls["n"] > 0
    assert outputs[True] == outputs[False]
