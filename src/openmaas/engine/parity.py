"""Greedy parity between our engine and `transformers`, tolerant of 16-bit rounding noise.

In bf16/fp16 two correct implementations may pick different tokens where the top two logits are
within rounding noise. `first_divergence` finds the first position where two greedy continuations
differ and measures, with fp32 reference logits, how close the two choices were there: a test
accepts a divergence only when that gap is within noise. Used by the CPU bf16 test and the GPU tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Divergence:
    position: int  # index into the continuation
    ours: int
    theirs: int
    logit_gap: float  # |logit(ours) - logit(theirs)| under the fp32 reference


def first_divergence(
    reference: torch.nn.Module, prompt: list[int], ours: list[int], theirs: list[int]
) -> Divergence | None:
    """None if the shorter continuation is a prefix of the longer one; else where and how they differ."""
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            device = next(reference.parameters()).device
            with torch.inference_mode():
                ids = torch.tensor([prompt + ours[:i]], device=device)
                logits = reference(ids).logits[0, -1].float()
            return Divergence(i, a, b, abs(float(logits[a] - logits[b])))
    return None
