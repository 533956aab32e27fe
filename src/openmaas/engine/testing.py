"""Tiny random-weight model folders for tests and benchmarks, built locally (no downloads).

`build_tiny_model` writes what a Hugging Face Llama or Qwen2 folder holds — config.json,
safetensors weights, tokenizer.json (a byte-level BPE trained here), tokenizer_config.json with a
ChatML chat template — so engine and API tests exercise the real loading path. Needs
`transformers` (a dev dependency), imported only when called.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "OpenMaaS serves models to many customers over an API.",
    "Paged attention keeps keys and values in fixed-size blocks.",
    "Continuous batching admits new requests between decode steps.",
    "Héllo wörld — naïve café, 東京, 😀 emoji and ünïcödé text.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 and symbols !?.,;:()[]{}",
]


def build_tokenizer(folder: Path, vocab_size: int = 500, corpus: Iterable[str] | None = None) -> None:
    """A byte-level BPE with our special tokens, trained on `corpus` (by default a small mixed text),
    and its tokenizer_config.json with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20 if corpus is None else corpus, trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "chat_template": CHATML_TEMPLATE,
        "model_max_length": 4096,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def build_tiny_model(
    folder: str | Path,
    arch: Literal["llama", "qwen2"] = "llama",
    *,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 512,
    max_position_embeddings: int = 1024,
    tie_word_embeddings: bool = False,
    initializer_range: float = 0.2,
    seed: int = 0,
    with_tokenizer: bool = True,
    **extra: Any,
) -> Path:
    """Write a random-weight model folder and return its path. The eos token id is 2 (<|im_end|>)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    config_cls = LlamaConfig if arch == "llama" else Qwen2Config
    config = config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=initializer_range,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=0,
        **extra,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path, safe_serialization=True)
    if with_tokenizer:
        build_tokenizer(path, vocab_size=min(vocab_size, 500))
    return path
