"""`dtype: "auto"`: the checkpoint's dtype where the device computes it natively, else float32, and
the reason the engine logs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from openmaas.engine.config import EngineConfig
from openmaas.engine.models.config import ModelConfig


def _native(*dtypes: torch.dtype) -> Callable[[torch.dtype], bool]:
    return lambda dtype: dtype in dtypes


@pytest.mark.parametrize(
    ("checkpoint", "native", "expected"),
    [
        ("bfloat16", (torch.bfloat16,), torch.bfloat16),  # AVX512-BF16 or AMX
        ("bfloat16", (), torch.float32),  # emulated bf16 is slower than fp32
        ("float16", (torch.float16,), torch.float16),
        ("float16", (torch.bfloat16,), torch.float32),
        ("float32", (torch.bfloat16,), torch.float32),
        (None, (torch.bfloat16,), torch.float32),
        ("int8", (torch.bfloat16,), torch.float32),  # not a dtype the engine runs in
    ],
)
def test_auto_follows_the_checkpoint_where_the_cpu_computes_it(
    checkpoint: str | None, native: tuple[torch.dtype, ...], expected: torch.dtype
) -> None:
    choice = EngineConfig(dtype="auto").choose_dtype(checkpoint, cpu_computes=_native(*native))
    assert choice.dtype == expected
    assert choice.reason.startswith("auto: the checkpoint")
    if checkpoint == "bfloat16" and expected == torch.float32:
        assert "AVX512-BF16/FP16 or AMX" in choice.reason


def test_an_asked_dtype_is_kept_whatever_the_checkpoint() -> None:
    choice = EngineConfig(dtype="bf16").choose_dtype("float32", cpu_computes=_native())
    assert (choice.dtype, choice.reason) == (torch.bfloat16, "dtype bf16 was asked for")


def test_the_checkpoint_dtype_is_read_from_either_name() -> None:
    base = {"vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1}
    base["num_attention_heads"] = 2
    assert ModelConfig.from_dict({**base, "torch_dtype": "bfloat16"}).checkpoint_dtype == "bfloat16"
    assert ModelConfig.from_dict({**base, "dtype": "float16"}).checkpoint_dtype == "float16"
    assert ModelConfig.from_dict(base).checkpoint_dtype is None


@pytest.mark.parametrize("checkpoint", ["bfloat16", "float16", "float32", None])
@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_auto_runs_a_quantised_model_in_float32_on_a_cpu(checkpoint: str | None, quantization: str) -> None:
    config = EngineConfig(dtype="auto", quantization=quantization)  # type: ignore[arg-type]
    choice = config.choose_dtype(checkpoint, cpu_computes=_native(torch.bfloat16, torch.float16))
    assert choice.dtype == torch.float32
    if checkpoint in ("bfloat16", "float16"):
        assert choice.reason.startswith(
            f"auto: the checkpoint is {checkpoint}, but its weights are quantised"
        )
        assert f"({quantization})" in choice.reason and "float32" in choice.reason


def test_a_quantised_model_keeps_an_asked_dtype_and_the_checkpoints_on_a_gpu() -> None:
    cpu = EngineConfig(dtype="bf16", quantization="int8").choose_dtype("bfloat16", cpu_computes=_native())
    assert cpu.dtype == torch.bfloat16
    gpu = EngineConfig(dtype="auto", quantization="int8", device="cuda")
    assert gpu.choose_dtype("float16", cpu_computes=_native()).dtype == torch.float16
