"""The fp32 path for batched bf16 matmuls gives what an fp32 matmul of the bf16 values gives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from openmaas.engine.models.linear import Linear, enable_fp32_batched_matmul


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


def test_row_split_equals_one_matmul_and_stays_in_inference_mode() -> None:
    from openmaas.engine.models.linear import Linear, enable_row_split

    torch.manual_seed(0)
    for bias in (True, False):
        layer = Linear(24, 37, bias=bias)  # 37 outputs: blocks of uneven size
        split = enable_row_split(layer, parts=3, max_rows=4)
        assert split is not None
        try:
            for rows in (1, 3, 4, 9):  # 9 rows: above max_rows, one plain matmul
                x = torch.randn(rows, 24)
                with torch.inference_mode():
                    got = layer(x)
                    assert got.is_inference()
                # Same dot products; only the kernel's blocking (summation order) may differ.
                want = torch.nn.functional.linear(x, layer.weight, layer.bias)
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
            with torch.no_grad():
                want = torch.nn.functional.linear(x[:1], layer.weight, layer.bias)
                torch.testing.assert_close(layer(x[:1]), want, rtol=1e-6, atol=1e-6)
        finally:
            split.close()
    assert enable_row_split(Linear(4, 4), parts=1) is None
