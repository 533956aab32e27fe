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


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_tiny_adapter(
    folder: str | Path,
    model_folder: str | Path,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    targets: Iterable[str] = LORA_TARGETS,
    std: float = 0.3,
    seed: int = 0,
) -> Path:
    """Write a random LoRA adapter for the model in `model_folder`, in peft's layout (what our
    fine-tuning jobs save): `adapter_model.safetensors` with a non-zero B, so the adapter changes the
    model's output, and `adapter_config.json`. Returns the folder."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((Path(model_folder) / "config.json").read_text())
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    shapes = {  # (in, out) of each projection
        "q_proj": (hidden, q), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (q, hidden),
        "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden),
    }  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for layer in range(config["num_hidden_layers"]):
        for name in targets:
            group = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{group}.{name}"
            n_in, n_out = shapes[name]
            state[f"{prefix}.lora_A.weight"] = torch.randn(rank, n_in, generator=generator) * std
            state[f"{prefix}.lora_B.weight"] = torch.randn(n_out, rank, generator=generator) * std
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(model_folder),
        "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": sorted(set(targets)),
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
    }  # fmt: skip
    (path / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    return path


def merge_adapter(model: Any, adapter_folder: str | Path) -> None:
    """Fold a peft LoRA adapter into a transformers model's weights in place (peft's merge:
    W + alpha / r x B @ A) — the reference an engine serving the adapter must match."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((Path(adapter_folder) / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    state = load_file(str(Path(adapter_folder) / "adapter_model.safetensors"))
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, a in state.items():
            if ".lora_A." not in key:
                continue
            b = state[key.replace(".lora_A.", ".lora_B.")]
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            modules[name].weight += scale * (b.float() @ a.float()).to(modules[name].weight.dtype)


GGUF_TENSORS = {  # Hugging Face name suffix -> llama.cpp's
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}  # fmt: skip
_GGUF_GLOBALS = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output"}


def write_gguf(
    model_folder: str | Path, path: str | Path, file_type: str = "F32", output_type: str | None = None
) -> Path:
    """Write the Hugging Face folder `model_folder` (from `build_tiny_model`) as a GGUF file laid out
    as llama.cpp's convert_hf_to_gguf.py lays it out: its metadata keys, byte-level BPE vocabulary
    ("gpt-2" pre-tokenizer), chat template, tensor names, a `llama` model's Q/K rows permuted into
    llama.cpp's RoPE order, 1-D tensors in F32 and matrices in `file_type` (F32, F16, BF16, Q8_0 or
    Q4_0; with gguf.quants, as the converter quantises). No `output.weight` for tied embeddings.
    `output_type`: the output matrix's own type (the token embedding's, when tied), as llama-quantize
    keeps it at a higher precision than the layers. llama.cpp itself loads these files."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    folder = Path(model_folder)
    config = json.loads((folder / "config.json").read_text())
    arch = config["model_type"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(folder.name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(config.get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    file_types = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16"}
    writer.add_file_type(gguf.LlamaFileType[file_types.get(file_type, f"MOSTLY_{file_type}")])
    if arch == "llama":
        writer.add_vocab_size(config["vocab_size"])
        writer.add_rope_dimension_count(config["hidden_size"] // heads)
    _add_gguf_vocab(writer, folder, config["vocab_size"])
    weights = load_file(str(folder / "model.safetensors"))
    for name, array in weights.items():
        if name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        data = array.astype(np.float32)
        if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            n = heads if ".q_proj." in name else kv_heads
            data = (
                data.reshape(n, 2, data.shape[0] // n // 2, *data.shape[1:])
                .swapaxes(1, 2)
                .reshape(data.shape)
            )
        target = _gguf_name(name)
        output = target == "output.weight" or (
            target == "token_embd.weight" and config.get("tie_word_embeddings")
        )
        qtype = gguf.GGMLQuantizationType[output_type if output and output_type else file_type]
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(target, data)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(target, data.astype(np.float16))
        else:
            writer.add_tensor(target, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def _gguf_name(name: str) -> str:
    name = name.removeprefix("model.")
    if name.startswith("layers."):
        _, index, rest = name.split(".", 2)
        stem, kind = rest.rsplit(".", 1)
        return f"blk.{index}.{GGUF_TENSORS[stem]}.{kind}"
    stem, kind = name.rsplit(".", 1)
    return f"{_GGUF_GLOBALS[stem]}.{kind}"


def _add_gguf_vocab(writer: Any, folder: Path, vocab_size: int) -> None:
    """The converter's `_set_vocab_gpt2`: tokens by id (padded to the model's vocabulary as
    `[PAD{id}]`), their types (special added tokens are control tokens), merges, special ids and
    the chat template."""
    import gguf

    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    token_config = json.loads((folder / "tokenizer_config.json").read_text())
    by_id = {index: token for token, index in tokenizer["model"]["vocab"].items()}
    special = {t["id"]: t["content"] for t in tokenizer["added_tokens"] if t["special"]}
    by_id |= special
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        tokens.append(token if token is not None else f"[PAD{index}]")
        kinds = gguf.TokenType
        types.append(kinds.UNUSED if token is None else kinds.CONTROL if index in special else kinds.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    ids = {token: index for index, token in by_id.items()}
    config = json.loads((folder / "config.json").read_text())
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(ids[token_config["eos_token"]])
    writer.add_pad_token_id(ids[token_config["pad_token"]])
    writer.add_chat_template(token_config["chat_template"])
