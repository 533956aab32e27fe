"""bf16 on CPU (the CPU twin of tests/gpu): greedy output agrees with transformers up to bf16 noise."""

from __future__ import annotations

from pathlib import Path

import torch

from openmaas.engine import SamplingParams
from openmaas.engine.parity import first_divergence

from .conftest import make_engine, random_prompts

NOISE = 0.15  # logit gap under which bf16 rounding may legitimately flip a greedy choice


def test_bf16_batch_matches_transformers_within_noise(model_dirs: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    path = model_dirs["qwen2"]
    engine = make_engine(path, dtype="bfloat16")
    hf16 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    hf32 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = random_prompts([5, 20, 33, 64, 9, 17], seed=41)
    # Both sides stop at eos, so an eos chosen by one side only shows up as a divergence.
    results = engine.generate(prompts, SamplingParams(max_tokens=16, temperature=0.0))
    exact = 0
    for prompt, [result] in zip(prompts, results, strict=True):
        with torch.inference_mode():
            theirs = hf16.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False, pad_token_id=0)
        theirs = theirs[0, len(prompt) :].tolist()
        divergence = first_divergence(hf32, prompt, result.token_ids, theirs)
        if divergence is None:
            exact += 1
        else:
            assert divergence.logit_gap < NOISE, divergence
    assert exact >= len(prompts) // 2
