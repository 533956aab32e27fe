"""LoRA fine-tuning of the tiny random Llama and Qwen2 models: loss only on assistant tokens
through the model's chat template, the adapter saved in peft's layout, and a mapping the base
cannot do learned (greedy exact match on held-out prompts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from openmaas.engine.testing import build_tiny_model
from openmaas.engine.tokenizer import Tokenizer
from openmaas.training.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoraSpec,
    apply_lora,
    lora_parameters,
    merge_lora,
    save_adapter,
)
from openmaas.training.sft import IGNORE, encode_example, train_epoch

ANSWERS = {"fox": "brown fox", "dog": "lazy dog", "cafe": "naive cafe", "emoji": "happy text"}


def chat(topic: str, k: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"Tell me about the {topic} {k}"},
        {"role": "assistant", "content": ANSWERS[topic]},
    ]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(request.param) / "model"
    return build_tiny_model(folder, request.param, max_position_embeddings=128)


def _model(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def _greedy(model: Any, tokenizer: Tokenizer, messages: list[dict[str, Any]]) -> str:
    ids = tokenizer.encode_chat(messages)
    out = model.generate(
        torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=2, pad_token_id=0
    )
    return tokenizer.decode(out[0, len(ids) :].tolist())


def _exact_match(model: Any, tokenizer: Tokenizer, held_out: list[list[dict[str, Any]]]) -> float:
    model.eval()
    hits = sum(_greedy(model, tokenizer, m[:1]) == m[1]["content"] for m in held_out)
    return hits / len(held_out)


def test_only_assistant_tokens_are_learned(tiny: Path) -> None:
    tokenizer = Tokenizer.from_pretrained(tiny)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me about the fox 1"},
        {"role": "assistant", "content": "ignored", "weight": 0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "brown fox"},
    ]
    encoded = encode_example(tokenizer, messages)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=False)
    assert tokenizer.decode(encoded.input_ids, skip_special_tokens=False) == rendered
    learned = [token for token in encoded.labels if token != IGNORE]
    assert tokenizer.decode(learned, skip_special_tokens=False) == "brown fox<|im_end|>\n"
    # The prompt the engine serves ends where the learned answer begins.
    prompt = tokenizer.encode_chat(messages[:4])
    assert encoded.input_ids[: len(prompt)] == prompt and encoded.labels[len(prompt)] != IGNORE


def test_a_tiny_model_learns_a_fixed_answer_per_question(tiny: Path, tmp_path: Path) -> None:
    tokenizer = Tokenizer.from_pretrained(tiny)
    train = [chat(topic, k) for topic in ANSWERS for k in range(40)]
    held_out = [chat(topic, k) for topic in ANSWERS for k in range(100, 110)]
    model = _model(tiny)
    spec = LoraSpec(rank=8, alpha=16)
    wrapped = apply_lora(model, spec)
    assert len(wrapped) == 2 * 7  # every attention and MLP projection of both layers
    assert _exact_match(model, tokenizer, held_out) <= 0.1

    examples = [encode_example(tokenizer, m) for m in train]
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=5e-3)
    step = 0
    for epoch in range(5):
        step = train_epoch(
            model, optimizer, examples, epoch=epoch, first_step=step, batch_size=8, seed=0, pad_id=0
        )
    assert step == 100
    assert _exact_match(model, tokenizer, held_out) >= 0.9

    save_adapter(model, spec, tmp_path / "adapter", base_model="tiny")
    config = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 16)
    weights = load_file(tmp_path / "adapter" / ADAPTER_WEIGHTS)
    a = weights["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = weights["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert a.shape == (8, 64) and b.shape[1] == 8 and len(weights) == 2 * 14

    # Merged into the weights, plain transformers gives the same greedy answers.
    answers = [_greedy(model, tokenizer, m[:1]) for m in held_out[:8]]
    merge_lora(model)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert [_greedy(model, tokenizer, m[:1]) for m in held_out[:8]] == answers
