"""Our CPU kernels (openmaas.engine.kernels, C built with the system compiler): the decode matmul for
every row count and tail against a float64 reference, RMSNorm / RoPE / decode attention against the
PyTorch ops they replace, the engine running through them with the same tokens, huge-page weights
staying tied, and the fallback where they cannot be built."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from openmaas.engine import kernels
from openmaas.engine.attention import AttentionMetadata, paged_attention
from openmaas.engine.models.linear import Linear
from openmaas.engine.models.llama import RMSNorm, enable_cpu_kernels, rotate_

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
    ops = kernels.load_kernels(dtype)
    assert ops is not None
    g = torch.Generator().manual_seed(m * 1000 + k)
    for n, bias, threads in [(1, False, 2), (7, True, 2), (130, True, 1), (130, False, 3)]:
        w = torch.randn(n, k, generator=g).to(dtype)
        x = torch.randn(m, k, generator=g).to(dtype)
        b = torch.randn(n, generator=g).to(dtype) if bias else None
        torch.set_num_threads(threads)
        try:
            y = ops.gemv(x, w, b)
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
    ops = kernels.load_kernels(torch.bfloat16)
    if ops is None:
        pytest.skip("no AVX512-BF16")
    values = torch.tensor([1.0 + 2**-8, 1.0 + 3 * 2**-8, -(1.0 + 2**-8), 3.0, float("nan")])
    for v in values:
        # v itself is not a bf16 value; reach it as a bias-free sum of two exact bf16 terms.
        hi = v.to(torch.bfloat16)
        lo = (v - hi.float()).to(torch.bfloat16)
        x = torch.stack([hi, lo]).view(1, 2)
        y = ops.gemv(x, torch.ones(1, 2, dtype=torch.bfloat16), None)
        expected = (hi.float() + lo.float()).to(torch.bfloat16)
        assert torch.equal(y.view(-1).isnan(), expected.view(-1).isnan())
        if not expected.isnan():
            assert y.item() == expected.item(), float(v)


@needs_kernel
def test_kernel_refuses_rows_it_does_not_handle() -> None:
    ops = kernels.load_kernels(DTYPES[0])
    assert ops is not None
    w = torch.zeros(8, 16, dtype=DTYPES[0])
    assert ops.fits_gemv(torch.zeros(1, 16, dtype=DTYPES[0]))
    assert not ops.fits_gemv(torch.zeros(ops.max_rows + 1, 16, dtype=DTYPES[0]))
    assert not ops.fits_gemv(torch.zeros(0, 16, dtype=DTYPES[0]))  # a step where nothing samples
    assert not ops.fits_gemv(torch.zeros(16, 2, dtype=DTYPES[0]).t())  # not contiguous
    assert not ops.fits_gemv(torch.zeros(1, 16, dtype=torch.float16))
    with pytest.raises(ValueError, match="bad shapes"):
        ops.gemv(torch.zeros(ops.max_rows + 1, 16, dtype=DTYPES[0]), w, None)
    assert not ops.fits_attention(64, 1, 64)  # 64 query heads per KV head: PyTorch's SDPA
    assert not ops.fits_attention(8, 2, 512)


@needs_kernel
@torch.inference_mode()
def test_huge_page_weights_stay_tied_and_equal(model_dirs: dict[str, Path]) -> None:
    from openmaas.engine.models.loader import load_model

    model = load_model(str(model_dirs["qwen2"]), torch.float32, torch.device("cpu"), 256)
    embed, head = model.embed_tokens, model.lm_head
    assert head.weight is embed.weight
    proj = model.layers[0].self_attn.qkv_proj
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert enable_cpu_kernels(model, torch.float32)
    assert head.weight is embed.weight and head.kernels is not None and proj.kernels is not None
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
    assert embed.weight.data_ptr() % 64 == 0 and proj.weight.data_ptr() % 64 == 0
    x = torch.randn(2, proj.in_features)
    w, b = before["layers.0.self_attn.qkv_proj.weight"], before["layers.0.self_attn.qkv_proj.bias"]
    torch.testing.assert_close(proj(x), x @ w.t() + b)


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
        assert kernels.load_kernels(torch.float32) is None
    if kernels.platform.machine() == "x86_64":
        assert "no C compiler" in caplog.text


def test_compiler_errors_leave_no_partial_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if kernels._compiler() is None:
        pytest.skip("no C compiler")
    bad = tmp_path / "bad.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(kernels, "SOURCES", [bad])
    with pytest.raises(RuntimeError, match="failed"):
        kernels.build(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


@needs_kernel
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_engine_decodes_through_the_kernel_with_the_same_tokens(
    model_dirs: dict[str, Path], arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openmaas.engine import SamplingParams

    calls: dict[str, int] = {}
    originals = {
        name: getattr(kernels.CpuKernels, name)
        for name in ("gemv", "add_rmsnorm", "rope", "silu_mul", "argmax", "decode_layer")
    }

    def counting(name: str) -> object:
        def call(self: kernels.CpuKernels, *args: object) -> object:
            calls[name] = calls.get(name, 0) + 1
            return originals[name](self, *args)

        return call

    for name in originals:
        monkeypatch.setattr(kernels.CpuKernels, name, counting(name))
    prompts = random_prompts([5, 19, 33], seed=3)
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    outputs = {}
    for gemv in (True, False):
        engine = make_engine(model_dirs[arch], cpu_kernels=gemv)
        layers = [m for m in engine.runner.model.modules() if isinstance(m, Linear)]
        assert all((m.kernels is not None) == gemv for m in layers)
        outputs[gemv] = [r[0].token_ids for r in engine.generate(prompts, params)]
    assert set(calls) == set(originals) and min(calls.values()) > 0, calls
    assert outputs[True] == outputs[False]


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,n", [(1, 896), (3, 40), (9, 17)])
@torch.inference_mode()
def test_add_rmsnorm_matches_the_pytorch_norm_and_adds_in_place(
    dtype: torch.dtype, rows: int, n: int
) -> None:
    ops = kernels.load_kernels(dtype)
    assert ops is not None
    g = torch.Generator().manual_seed(n)
    norm = RMSNorm(n, 1e-6).to(dtype)
    norm.weight.copy_(torch.randn(n, generator=g))
    h = (torch.randn(rows, n, generator=g) * 3).to(dtype)
    delta = torch.randn(rows, n, generator=g).to(dtype)
    expected_h = h + delta
    expected = norm(expected_h)
    out = ops.add_rmsnorm(h, delta, norm.weight, norm.eps)
    assert torch.equal(h, expected_h)  # the residual add, rounded as PyTorch rounds, in place
    # The fp32 sum of squares runs in another order: within one rounding of the output dtype.
    tol = 2**-7 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
    plain = ops.add_rmsnorm(expected_h.clone(), None, norm.weight, norm.eps)
    torch.testing.assert_close(plain, expected, rtol=tol, atol=tol)


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [16, 64, 80])
@torch.inference_mode()
def test_rope_kernel_equals_the_pytorch_rotation_bit_for_bit(dtype: torch.dtype, d: int) -> None:
    from openmaas.engine.models.config import ModelConfig
    from openmaas.engine.models.llama import RotaryEmbedding

    ops = kernels.load_kernels(dtype)
    assert ops is not None
    config = ModelConfig.from_dict(
        {
            "vocab_size": 10,
            "hidden_size": d * 4,
            "intermediate_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rope_theta": 10000.0,
        }
    )
    rotary = RotaryEmbedding(config, 512)
    positions = torch.tensor([0, 7, 300, 511, 42])
    g = torch.Generator().manual_seed(d)
    # q and k heads inside a wider row (a q/k/v tensor): the token stride is not heads * d.
    qkv = torch.randn(5, 8, d, generator=g).to(dtype)
    ours, theirs = qkv.clone(), qkv.clone()
    rotate_(ours[:, :6], rotary.tables(positions, dtype, gather=False), ops)
    rotate_(theirs[:, :6], rotary.tables(positions, dtype))
    assert torch.equal(ours, theirs)


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,d", [(14, 2, 64), (4, 4, 16), (6, 2, 40)])
@torch.inference_mode()
def test_decode_attention_reads_the_paged_cache_like_sdpa(
    dtype: torch.dtype, heads: int, kv_heads: int, d: int
) -> None:
    ops = kernels.load_kernels(dtype)
    assert ops is not None
    g = torch.Generator().manual_seed(heads * d)
    slots_total = 400
    cache = torch.randn(slots_total, 2, kv_heads, d, generator=g).to(dtype)
    lengths = [1, 70, 129, 5]  # across the kernel's 64-position blocks, one with padding
    max_len = max(lengths)
    slots = torch.zeros(len(lengths), max_len, dtype=torch.long)
    for i, n in enumerate(lengths):
        slots[i, :n] = torch.randperm(slots_total, generator=g)[:n]  # scattered, like paged blocks
    q = torch.randn(len(lengths), heads + 2 * kv_heads, d, generator=g).to(dtype)[:, :heads]
    kv = cache[slots[:, -1]].clone()  # the new tokens' own K/V, written by paged_attention first
    for i, n in enumerate(lengths):
        kv[i] = cache[slots[i, n - 1]]
    mask = (torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]
    meta = AttentionMetadata(
        slot_mapping=torch.tensor([slots[i, n - 1] for i, n in enumerate(lengths)]),
        num_decode=len(lengths),
        decode_slots=slots,
        decode_mask=mask,
        decode_lengths=torch.tensor(lengths),
    )
    scale = d**-0.5
    theirs = paged_attention(q, kv, cache.clone(), meta, scale)
    ours = paged_attention(q, kv, cache.clone(), meta, scale, ops)
    tol = 2**-7 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,n", [(1, 4864), (3, 20), (2, 5000)])
@torch.inference_mode()
def test_silu_gate_rounds_like_f_silu_times_up(dtype: torch.dtype, rows: int, n: int) -> None:
    ops = kernels.load_kernels(dtype)
    assert ops is not None
    g = torch.Generator().manual_seed(n)
    gate_up = (torch.randn(rows, 2 * n, generator=g) * 4).to(dtype)
    gate, up = gate_up.split(n, dim=-1)
    expected = torch.nn.functional.silu(gate) * up
    out = ops.silu_mul(gate_up)
    # Our exp is within ~2 ulp of PyTorch's: bf16 results are equal or one rounding apart.
    tol = 2**-7 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
    if dtype == torch.bfloat16:
        assert (out != expected).float().mean() < 0.01


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
def test_argmax_picks_the_first_largest_like_torch_max(dtype: torch.dtype) -> None:
    ops = kernels.load_kernels(dtype)
    assert ops is not None
    g = torch.Generator().manual_seed(7)
    for rows, n in [(1, 151936), (1, 100), (3, 20000), (5, 33)]:
        logits = torch.randn(rows, n, generator=g).to(dtype)
        assert ops.argmax(logits) == logits.max(dim=-1).indices.tolist()
    # Ties go to the first index, also across the threads' halves of a long row.
    tied = torch.zeros(1, 20000, dtype=dtype)
    tied[0, [9000, 15000, 19999]] = 5.0
    assert ops.argmax(tied) == [9000]
    late = torch.full((1, 20000), -float("inf"), dtype=dtype)
    late[0, 19990] = -1.0
    assert ops.argmax(late) == [19990]
    assert ops.argmax(torch.full((2, 40), -float("inf"), dtype=dtype)) == [0, 0]
    nan = torch.randn(2, 20000, generator=g).to(dtype)
    nan[0, 12345] = float("nan")
    nan[1, 3] = float("nan")
    assert ops.argmax(nan) == [12345, 3]


@needs_kernel
def test_no_second_weight_copy_when_memory_is_short(
    model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from openmaas.engine import SamplingParams, model_runner

    prompts = random_prompts([4, 40], seed=5)
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    roomy = make_engine(model_dirs["llama"])
    layers = [m for m in roomy.runner.model.modules() if isinstance(m, Linear)]
    assert all(m.onednn_weight is not None for m in layers)  # this machine has room for both copies
    expected = [r[0].token_ids for r in roomy.generate(prompts, params)]

    page = 4096
    monkeypatch.setattr(model_runner.os, "sysconf", lambda name: page if name == "SC_PAGE_SIZE" else 16)
    with caplog.at_level(logging.WARNING, logger="openmaas.engine.model_runner"):
        short = make_engine(model_dirs["llama"])
    assert "skipping oneDNN's second copy" in caplog.text
    layers = [m for m in short.runner.model.modules() if isinstance(m, Linear)]
    assert all(m.onednn_weight is None and m.kernels is not None for m in layers)
    assert [r[0].token_ids for r in short.generate(prompts, params)] == expected


@needs_kernel
def test_a_prompt_longer_than_the_step_budget_alone(model_dirs: dict[str, Path]) -> None:
    """Its first steps compute prompt chunks only, so nothing samples and the head sees no rows (this
    crashed the kernel path before)."""
    from openmaas.engine import SamplingParams

    prompt = random_prompts([57], seed=9)
    params = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    outputs = [
        make_engine(model_dirs["qwen2"], max_num_batched_tokens=16, cpu_kernels=on).generate(prompt, params)[
            0
        ][0]
        for on in (True, False)
    ]
    assert len(outputs[0].token_ids) == 5 and outputs[0].token_ids == outputs[1].token_ids


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_one_call_decode_layer_equals_the_op_by_op_path_bit_for_bit(
    model_dirs: dict[str, Path], arch: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """layer.c runs the same kernels in one parallel region: for 1 to 4 decoding sequences (and the
    steps that mix prefill in, which go op by op) the logits are identical to the op-by-op path's."""
    from openmaas.engine import SamplingParams
    from openmaas.engine.model_runner import ModelRunner

    seen: dict[str, list[torch.Tensor]] = {"fused": [], "ops": []}
    mode = {"now": "fused"}
    original = ModelRunner.execute

    def recording(self: ModelRunner, batch: list) -> tuple:  # type: ignore[type-arg]
        out = original(self, batch)  # (logits, ...)
        seen[mode["now"]].append(out[0].clone())
        return out

    monkeypatch.setattr(ModelRunner, "execute", recording)
    calls = {"layer": 0}
    layer = kernels.CpuKernels.decode_layer

    def counted(self: kernels.CpuKernels, *args: object) -> torch.Tensor:
        calls["layer"] += 1
        return layer(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(kernels.CpuKernels, "decode_layer", counted)
    prompts = random_prompts([3, 18, 9, 30], seed=11)
    params = SamplingParams(max_tokens=7, temperature=0.0, ignore_eos=True)
    name = "bfloat16" if dtype == torch.bfloat16 else "float32"
    for now in ("fused", "ops"):
        mode["now"] = now
        engine = make_engine(model_dirs[arch], dtype=name, max_num_seqs=4)
        if now == "ops":
            engine.runner.model.fused_shape = None  # the op-by-op path
        else:
            assert engine.runner.model.fused_shape is not None
        engine.generate(prompts, params)
    assert calls["layer"] > 0
    assert len(seen["fused"]) == len(seen["ops"])
    for fused, ops in zip(seen["fused"], seen["ops"], strict=True):
        assert torch.equal(fused, ops)
