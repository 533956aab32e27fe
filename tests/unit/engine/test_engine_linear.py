"""Both CPU matmul paths of Linear give what a plain matmul gives: the fp32 path for batched bf16
matmuls, and oneDNN on reordered weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from openmaas.engine.models.linear import (
    Linear,
    cpu_has_fast_half,
    enable_fp32_batched_matmul,
    enable_onednn_matmul,
    onednn_available,
)


@torch.inference_mode()
def test_batched_rows_use_fp32_in_slices_and_single_rows_stay_bf16() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Linear(64, 300, bias=True)).to(torch.bfloat16)
    layer = model[0]
    enable_fp32_batched_matmul(model, min_rows=4, chunk_elements=64 * 7)  # 43 slices of 7 rows
    x = torch.randn(9, 64, dtype=torch.bfloat16)
    reference = F.linear(x.float(), layer.weight.float(), layer.bias.float())
    out = layer(x)
    assert out.dtype == torch.bfloat16 and out.shape == (9, 300)
    torch.testing.assert_close(out.float(), reference, atol=0.02, rtol=0.01)
    torch.testing.assert_close(out, reference.to(torch.bfloat16), atol=0.0, rtol=0.0)
    single = layer(x[:1])
    torch.testing.assert_close(single, F.linear(x[:1], layer.weight, layer.bias))


@pytest.mark.skipif(not onednn_available(torch.device("cpu")), reason="PyTorch built without oneDNN")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_onednn_matmul_equals_f_linear_and_keeps_shared_weights(dtype: torch.dtype) -> None:
    if dtype != torch.float32 and not cpu_has_fast_half(dtype):
        # oneDNN refuses bf16 weights on such CPUs; the engine takes its fp32 path there instead.
        pytest.skip("CPU without native bf16 math: the engine does not use oneDNN for bf16")
    torch.manual_seed(0)
    embed = nn.Embedding(37, 24)
    model = nn.ModuleDict(
        {"embed": embed, "proj": Linear(24, 37, bias=True), "head": Linear(24, 37, bias=False)}
    )
    model.to(dtype)
    model["head"].weight = embed.weight  # tied, as lm_head is to the embeddings
    proj_weight = model["proj"].weight.detach().clone()
    enable_onednn_matmul(model)
    assert model["proj"].weight.layout == torch._mkldnn  # replaced by the reordered weight
    assert model["head"].weight is embed.weight  # shared: the embedding still needs it
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for rows in (1, 3, 16, 40):
        x = torch.randn(rows, 24, dtype=dtype)
        with torch.inference_mode():
            got_proj, got_head = model["proj"](x), model["head"](x)
        torch.testing.assert_close(got_proj, F.linear(x, proj_weight, model["proj"].bias), rtol=tol, atol=tol)
        torch.testing.assert_close(got_head, F.linear(x, embed.weight), rtol=tol, atol=tol)
