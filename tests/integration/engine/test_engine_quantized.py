"""An engine with `quantization` int8 / int4: tiny random Llama and Qwen2 (tied embeddings) quantised at
load give the greedy tokens of the same model run with the dequantised float weights (the same values).
Kernel-less, the arithmetic is the float model's; with our kernels (activations rounded to int8 per run
of 32, as llama.cpp does) the log-probabilities stay within a stated tolerance of the float model's, and
the tokens are the same until a near tie that the rounding may tip."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from openmaas.engine import LLMEngine, SamplingParams
from openmaas.engine.kernels import CpuKernels, QuantLayerParams, load_kernels
from openmaas.engine.kernels.quant import load_quant_kernels
from openmaas.engine.lora import LoraRequest
from openmaas.engine.model_runner import ModelRunner
from openmaas.engine.models.linear import Linear
from openmaas.engine.models.llama import enable_cpu_kernels
from openmaas.engine.outputs import TokenLogprob
from openmaas.engine.quant import dequantize, quantize
from openmaas.engine.testing import build_tiny_adapter

from .conftest import ARCHS, make_engine, random_prompts

PROMPTS = random_prompts([3, 17, 40], seed=11)
GREEDY = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True, logprobs=True, top_logprobs=5)
# How far rounding activations to int8 per run of 32 moves these tiny random models' log-probabilities
# (measured: at most 0.13 over both models and formats; their hidden states have large outliers within
# a run, which set the rounding step). The kernels themselves are held to the rounding's exact bound in
# tests/unit/engine/test_engine_quant_kernels.py.
KERNEL_LOGPROB_TOL = 0.25


def dequantised_twin(quantised: LLMEngine, model_dir: Path) -> LLMEngine:
    """A float engine on the same folder whose quantised layers hold the dequantised values."""
    twin = make_engine(model_dir, cpu_onednn=False, cpu_kernels=False)
    theirs = dict(quantised.runner.model.named_modules())
    for name, module in twin.runner.model.named_modules():
        other = theirs[name]
        if isinstance(other, Linear) and other.quantized is not None:
            assert isinstance(module, Linear)
            module.weight = nn.Parameter(dequantize(other.quantized), requires_grad=False)  # unties lm_head
    return twin


def run(engine: LLMEngine) -> list[list[TokenLogprob]]:
    return [r[0].logprobs or [] for r in engine.generate(PROMPTS, GREEDY)]


def tokens(runs: list[list[TokenLogprob]]) -> list[list[int]]:
    return [[lp.token_id for lp in steps] for steps in runs]


def assert_close_until_a_near_tie(got: list[TokenLogprob], reference: list[TokenLogprob], tol: float) -> None:
    """Equal tokens with log-probabilities within `tol` until the first differing token, which must be
    one of the reference's top 5 within 2 x tol of its pick (a near tie the rounding tipped)."""
    for ours, ref in zip(got, reference, strict=True):
        if ours.token_id != ref.token_id:
            alternatives = dict(ref.top_logprobs)
            assert ours.token_id in alternatives, (ours, ref)
            assert ref.logprob - alternatives[ours.token_id] <= 2 * tol, (ours, ref)
            return
        assert abs(ours.logprob - ref.logprob) <= tol, (ours, ref)


@pytest.mark.parametrize("fmt", ["int8", "int4"])
@pytest.mark.parametrize("arch", ARCHS)
def test_quantised_engine_gives_the_dequantised_models_greedy_tokens(
    model_dirs: dict[str, Path], arch: str, fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="openmaas.engine.models.loader"):
        fallback = make_engine(model_dirs[arch], quantization=fmt, cpu_kernels=False)
    assert "quantised" in caplog.text and f"to {fmt}" in caplog.text and "MB" in caplog.text
    model = fallback.runner.model
    layers = [m for m in model.modules() if isinstance(m, Linear) and m.quantized is not None]
    assert len(layers) == 4 * len(model.layers) + 1  # qkv, o, gate_up, down per layer, and the lm_head
    assert all(m.weight.numel() == 0 for m in layers)  # the float weights are gone
    assert model.embed_tokens.weight.numel() > 0
    reference = run(dequantised_twin(fallback, model_dirs[arch]))
    got = run(fallback)
    assert tokens(got) == tokens(reference)
    for ours, ref in zip(got, reference, strict=True):
        assert_close_until_a_near_tie(ours, ref, 1e-4)

    if load_quant_kernels() is None:
        return
    kernel = make_engine(model_dirs[arch], quantization=fmt)
    assert all(
        m.quant_kernels is not None for m in kernel.runner.model.modules() if getattr(m, "quantized", None)
    )
    for ours, ref in zip(run(kernel), reference, strict=True):
        assert_close_until_a_near_tie(ours, ref, KERNEL_LOGPROB_TOL)


def test_bad_quantisation_settings_are_refused(model_dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="unknown quantization"):
        make_engine(model_dirs["llama"], quantization="int3")
    with pytest.raises(ValueError, match="multiple of 32"):
        make_engine(model_dirs["llama"], quantization="int8", quantization_group_size=48)


def test_per_channel_int8_decodes(model_dirs: dict[str, Path]) -> None:
    """quantization_group_size 0: one scale per output channel."""
    engine = make_engine(model_dirs["qwen2"], quantization="int8", quantization_group_size=0)
    layer = engine.runner.model.get_submodule("layers.0.mlp.down_proj")
    assert isinstance(layer, Linear) and layer.quantized is not None and layer.quantized.scales.shape[1] == 1
    out = engine.generate(PROMPTS[:1], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
    assert len(out[0][0].token_ids) == 4


def test_a_lora_adapter_on_a_quantised_base_is_the_adapter_on_the_dequantised_model(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Adapter deltas are added to the quantised layers' outputs: with the dequantising path the tokens
    and log-probabilities are the dequantised float model's with the same adapter, and differ from
    the base's."""
    folder = model_dirs["llama"]
    adapter = LoraRequest("quant-a", build_tiny_adapter(tmp_path / "adapter", folder, seed=5))
    quantised = make_engine(folder, quantization="int4", cpu_kernels=False)
    twin = dequantised_twin(quantised, folder)
    with_adapter = [r[0].logprobs or [] for r in quantised.generate(PROMPTS, GREEDY, [adapter] * 3)]
    reference = [r[0].logprobs or [] for r in twin.generate(PROMPTS, GREEDY, [adapter] * 3)]
    assert tokens(with_adapter) == tokens(reference) != tokens(run(quantised))
    for ours, ref in zip(with_adapter, reference, strict=True):
        assert_close_until_a_near_tie(ours, ref, 1e-4)


VNNI = load_kernels(torch.float32)


@pytest.mark.skipif(
    VNNI is None or not VNNI.quantized, reason="no AVX-512 VNNI: quantised decode goes op by op"
)
@pytest.mark.parametrize("fmt,dtype", [("int8", "bfloat16"), ("int4", "float32"), ("int4", "bfloat16")])
def test_one_call_quantised_decode_layer_equals_the_op_by_op_path_bit_for_bit(
    model_dirs: dict[str, Path], fmt: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every projection quantised, a decode step of 1-4 sequences runs each layer in one call
    (layer.c with quant512.c's matmul): its logits, and so its greedy tokens, are identical to the
    op-by-op path's (the same functions in the same order), for both architectures."""
    seen: dict[str, list[torch.Tensor]] = {"fused": [], "ops": []}
    mode = {"now": "fused"}
    original = ModelRunner.execute

    def recording(self: ModelRunner, batch: list) -> tuple:  # type: ignore[type-arg]
        out = original(self, batch)
        seen[mode["now"]].append(out[0].clone())
        return out

    monkeypatch.setattr(ModelRunner, "execute", recording)
    calls = {"layer": 0}
    layer = CpuKernels.decode_qlayer

    def counted(self: CpuKernels, *args: object) -> torch.Tensor:
        calls["layer"] += 1
        return layer(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(CpuKernels, "decode_qlayer", counted)
    prompts = random_prompts([3, 18, 9, 30], seed=11)
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    for arch in ARCHS:
        outputs = {}
        for now in ("fused", "ops"):
            mode["now"] = now
            engine = make_engine(model_dirs[arch], dtype=dtype, quantization=fmt, max_num_seqs=4)
            model = engine.runner.model
            assert model.fused_layers is not None and isinstance(model.fused_layers[0], QuantLayerParams)
            if now == "ops":
                model.fused_shape = None  # the op-by-op path
            outputs[now] = [r[0].token_ids for r in engine.generate(prompts, params)]
        assert outputs["fused"] == outputs["ops"]
    assert calls["layer"] > 0
    assert len(seen["fused"]) == len(seen["ops"])
    for fused, ops in zip(seen["fused"], seen["ops"], strict=True):
        assert torch.equal(fused, ops)


def test_a_layer_with_float_and_quantised_projections_decodes_op_by_op(model_dirs: dict[str, Path]) -> None:
    """Only a model whose layers' projections are all quantised (or all float) gets the one-call layer."""
    engine = make_engine(model_dirs["llama"], quantization="int8")
    model = engine.runner.model
    kernels = model.norm.kernels
    if kernels is None:
        pytest.skip("no AVX-512 kernels here")
    assert (model.fused_layers is not None) == kernels.quantized
    proj = model.get_submodule("layers.0.mlp.down_proj")
    assert isinstance(proj, Linear) and proj.quantized is not None
    proj.weight = nn.Parameter(dequantize(proj.quantized), requires_grad=False)
    proj.quantized = None
    model.fused_layers = model.fused_shape = None
    assert enable_cpu_kernels(model, model.embed_tokens.weight.dtype) is not None
    assert model.fused_layers is None
    out = engine.generate(PROMPTS[:1], SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
    assert len(out[0][0].token_ids) == 3


@pytest.mark.parametrize("arch", ARCHS)
def test_a_quantised_bf16_checkpoint_runs_in_float32_by_default(
    model_dirs: dict[str, Path], arch: str, tmp_path: Path
) -> None:
    """`dtype` auto on a CPU: fp32 activations and KV cache for quantised weights (engine/config.py),
    whose matrices are read in the checkpoint's bf16 and quantised to the values an fp32 load gives,
    the other parameters in fp32; `dtype` asked for is kept."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(model_dirs[arch], dtype=torch.bfloat16).save_pretrained(folder)
    engine = make_engine(folder, quantization="int8")
    runner = engine.runner
    assert runner.dtype == torch.float32 and "quantised (int8)" in runner.dtype_reason
    assert all(p.dtype == torch.float32 for p in runner.model.parameters())
    assert runner.kv_caches[0].dtype == torch.float32
    floats = make_engine(folder, dtype="float32", cpu_onednn=False, cpu_kernels=False).runner.model
    plain = dict(floats.named_modules())
    for name, module in runner.model.named_modules():
        if isinstance(module, Linear) and module.quantized is not None:
            expected = quantize(plain[name].weight, module.quantized.format, module.quantized.group_size)
            assert torch.equal(module.quantized.qweight, expected.qweight), name
            assert torch.equal(module.quantized.scales, expected.scales), name
    out = engine.generate(PROMPTS[:1], SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
    assert len(out[0][0].token_ids) == 3
    asked = make_engine(folder, quantization="int8", dtype="bfloat16").runner
    assert (asked.dtype, asked.dtype_reason) == (torch.bfloat16, "dtype bfloat16 was asked for")
