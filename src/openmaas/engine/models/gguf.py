"""Llama- and Qwen2-family GGUF files (llama.cpp's format) for the engine.

`read` checks a file without loading its weights: the architecture, the hyperparameters (as the
Hugging Face `config.json` our ModelConfig reads), the vocabulary (engine/models/gguf_vocab.py) and
every tensor's name, shape and type. `write_companions` writes config.json, tokenizer.json and
tokenizer_config.json beside the file, so the engine's config and tokenizer code read a GGUF folder
as any other. `load_model` builds our model from the file's tensors:

- F32, F16 and BF16 tensors load as floats in the engine's dtype;
- Q8_0 and Q4_0 blocks split bit for bit into a `QuantizedWeight` (engine/quant.py: `int8` and
  `int4`, group size 32), never through floats, and the linear layers run on them (`set_quantized`);
  the token embedding, a table looked up by row, is dequantised into floats (its tied output layer
  runs on the quantised table);
- other quantised types (the K-quants llama-quantize writes, e.g. its default Q6_K output.weight;
  Q4_1, Q5_0, Q5_1) are dequantised at load with gguf.quants, a linear layer's requantised to int8
  (group 32), and the log says which.

llama.cpp's converter permutes the rows of a `llama` model's Q and K projections (and biases) into
its interleaved RoPE layout; we undo it. `qwen2` tensors are stored as Hugging Face has them. A
file without `output.weight` ties the output layer to the token embedding.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType, ReaderTensor
from gguf import quants as gguf_quants
from jinja2.sandbox import ImmutableSandboxedEnvironment
from torch import nn

from openmaas.engine.models import gguf_vocab
from openmaas.engine.models.config import ModelConfig
from openmaas.engine.models.linear import Linear, set_quantized, share_dequant_scratch, stage_weight
from openmaas.engine.models.llama import LlamaForCausalLM, empty_model
from openmaas.engine.quant import QuantizedWeight, dequantize, quantize

log = logging.getLogger(__name__)

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
T = GGMLQuantizationType
FLOAT_TYPES = {T.F32, T.F16, T.BF16}
SPLIT_TYPES = {T.Q8_0: "int8", T.Q4_0: "int4"}  # blocks of 32: fp16 scale, then the values
DEQUANTISED_TYPES = {T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K}
SUPPORTED_TYPES = FLOAT_TYPES | set(SPLIT_TYPES) | DEQUANTISED_TYPES
_BLOCK = 32
COMPANIONS = ("config.json", "tokenizer.json", "tokenizer_config.json")

# GGUF tensor name (after "blk.N.") -> (our parameter, shard of the fused matrix).
_LAYER_TENSORS = {
    "attn_norm": ("input_layernorm", None),
    "attn_q": ("self_attn.qkv_proj", 0),
    "attn_k": ("self_attn.qkv_proj", 1),
    "attn_v": ("self_attn.qkv_proj", 2),
    "attn_output": ("self_attn.o_proj", None),
    "ffn_norm": ("post_attention_layernorm", None),
    "ffn_gate": ("mlp.gate_up_proj", 0),
    "ffn_up": ("mlp.gate_up_proj", 1),
    "ffn_down": ("mlp.down_proj", None),
}
_GLOBAL_TENSORS = {"token_embd": "embed_tokens", "output_norm": "norm", "output": "lm_head"}


class GGUFError(ValueError):
    """The file cannot be served; `field` names the metadata key or tensor at fault ("file" for the
    file as a whole); `unsupported`: the file is well formed, but holds what the engine does not run."""

    def __init__(self, message: str, field: str = "file", *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.unsupported = unsupported


@dataclass(frozen=True)
class GGUFModel:
    """What `read` found in a file: its architecture, config.json, vocabulary and tensors."""

    architecture: str
    config: dict[str, Any]
    vocab: gguf_vocab.Vocab
    file_type: str
    tensors: dict[str, ReaderTensor] = field(repr=False)

    @property
    def tensor_types(self) -> dict[str, str]:
        return {name: tensor.tensor_type.name for name, tensor in self.tensors.items()}

    @property
    def dequantised(self) -> list[str]:
        """Tensors whose type the engine does not run on directly: dequantised at load."""
        return [n for n, t in self.tensors.items() if t.tensor_type in DEQUANTISED_TYPES]


def find_file(folder: str | Path) -> Path | None:
    """The one .gguf file of a model folder, if it holds one."""
    files = sorted(Path(folder).glob("*.gguf"))
    if len(files) > 1:
        raise GGUFError(f"{folder} holds {len(files)} .gguf files; a model folder holds one")
    return files[0] if files else None


def read(path: str | Path) -> GGUFModel:
    """Check a GGUF file and describe it, or raise GGUFError naming what is wrong."""
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # gguf-py raises ValueError, IndexError, ... on malformed bytes
        raise GGUFError(f"{Path(path).name} is not a readable GGUF file: {exc}") from exc
    meta = _Metadata(reader)
    arch = meta.string("general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(
            f"architecture {arch!r} is not supported; supported: {sorted(ARCHITECTURES)}",
            "general.architecture",
            unsupported=True,
        )
    tensors = {t.name: t for t in reader.tensors}
    vocab = _vocab(meta)
    try:
        gguf_vocab.build_tokenizer(vocab)
    except gguf_vocab.VocabError as exc:
        raise GGUFError(str(exc), exc.field, unsupported=exc.unsupported) from exc
    except Exception as exc:  # the tokenizers library refusing what the metadata holds
        raise GGUFError(f"the vocabulary cannot be rebuilt: {exc}", "tokenizer.ggml.tokens") from exc
    if vocab.chat_template is not None:
        try:
            ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"]).parse(vocab.chat_template)
        except jinja2.TemplateSyntaxError as exc:
            raise GGUFError(f"the chat template does not parse: {exc}", "tokenizer.chat_template") from exc
    config = _config(meta, arch, tensors, vocab)
    _check_tensors(ModelConfig.from_dict(config), tensors)
    return GGUFModel(arch, config, vocab, _file_type(meta, tensors), tensors)


def write_companions(model: GGUFModel, folder: str | Path) -> None:
    """Write the config.json, tokenizer.json and tokenizer_config.json `model` stands for into `folder`
    (beside its .gguf file), where the engine's config and tokenizer code read them."""
    target = Path(folder)
    (target / "config.json").write_text(json.dumps(model.config, indent=2))
    tokenizer = gguf_vocab.build_tokenizer(model.vocab)
    (target / "tokenizer.json").write_text(tokenizer.to_str())
    config = gguf_vocab.tokenizer_config(model.vocab)
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def prepare_folder(path: str | Path) -> GGUFModel:
    """Check the file and write its companions beside it: its folder is then a model folder."""
    model = read(path)
    write_companions(model, Path(path).parent)
    return model


class _Metadata:
    def __init__(self, reader: GGUFReader) -> None:
        self.fields = reader.fields

    def get(self, key: str) -> Any:
        entry = self.fields.get(key)
        if entry is None:
            return None
        try:
            return entry.contents()
        except Exception as exc:
            raise GGUFError(f"{key} cannot be read: {exc}", key) from exc

    def string(self, key: str, default: str | None = None) -> str:
        value = self.get(key)
        if value is None and default is not None:
            return default
        if not isinstance(value, str):
            raise GGUFError(f"{key} is missing or not a string", key)
        return value

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.get(key)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise GGUFError(f"{key} is missing or not a positive integer", key)
        return value

    def number(self, key: str, default: float) -> float:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise GGUFError(f"{key} is not a number", key)
        # Stored as float32: 1e-6 reads back as 9.99999997e-07; the shortest decimal that rounds to
        # the same float32 is the value the model was configured with.
        return float(str(np.float32(value))) if isinstance(value, float) else float(value)

    def optional_id(self, key: str) -> int | None:
        value = self.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise GGUFError(f"{key} is not a token id", key)
        return value

    def strings(self, key: str, *, required: bool = True) -> list[str]:
        value = self.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise GGUFError(f"{key} is missing or not a list of strings", key)
        return value


def _vocab(meta: _Metadata) -> gguf_vocab.Vocab:
    types = meta.get("tokenizer.ggml.token_type") or []
    if not isinstance(types, list) or not all(isinstance(t, int) for t in types):
        raise GGUFError("tokenizer.ggml.token_type is not a list of integers", "tokenizer.ggml.token_type")
    template = meta.get("tokenizer.chat_template")
    return gguf_vocab.Vocab(
        model=meta.string("tokenizer.ggml.model"),
        pre=meta.get("tokenizer.ggml.pre"),
        tokens=meta.strings("tokenizer.ggml.tokens"),
        token_types=types,
        merges=meta.strings("tokenizer.ggml.merges", required=False),
        bos_id=meta.optional_id("tokenizer.ggml.bos_token_id"),
        eos_id=meta.optional_id("tokenizer.ggml.eos_token_id"),
        eot_id=meta.optional_id("tokenizer.ggml.eot_token_id"),
        pad_id=meta.optional_id("tokenizer.ggml.padding_token_id"),
        add_bos=bool(meta.get("tokenizer.ggml.add_bos_token")),
        chat_template=template if isinstance(template, str) else None,
    )


def _config(
    meta: _Metadata, arch: str, tensors: dict[str, ReaderTensor], vocab: gguf_vocab.Vocab
) -> dict[str, Any]:
    """The Hugging Face config.json this file's metadata stands for."""
    hidden = meta.integer(f"{arch}.embedding_length")
    heads = meta.integer(f"{arch}.attention.head_count")
    head_dim = meta.integer(f"{arch}.attention.key_length", default=hidden // heads or 1)
    if meta.integer(f"{arch}.attention.value_length", default=head_dim) != head_dim:
        raise GGUFError(
            "keys and values of different widths are not supported",
            f"{arch}.attention.value_length",
            unsupported=True,
        )
    if head_dim % 2:
        raise GGUFError(f"head width {head_dim} is odd", f"{arch}.attention.key_length")
    config: dict[str, Any] = {
        "architectures": [ARCHITECTURES[arch]],
        "model_type": arch,
        "vocab_size": len(vocab.tokens),
        "hidden_size": hidden,
        "intermediate_size": meta.integer(f"{arch}.feed_forward_length"),
        "num_hidden_layers": meta.integer(f"{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": meta.integer(f"{arch}.attention.head_count_kv", default=heads),
        "head_dim": head_dim,
        "rms_norm_eps": meta.number(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6),
        "max_position_embeddings": meta.integer(f"{arch}.context_length", default=2048),
        "rope_theta": meta.number(f"{arch}.rope.freq_base", 10000.0),
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": arch == "llama" and "blk.0.attn_q.bias" in tensors,
        "bos_token_id": vocab.bos_id,
        "eos_token_id": gguf_vocab.end_of_generation_ids(vocab),
        "torch_dtype": _checkpoint_dtype(meta, tensors),
    }
    if heads % config["num_key_value_heads"]:
        raise GGUFError("head_count is not a multiple of head_count_kv", f"{arch}.attention.head_count_kv")
    scaling = meta.get(f"{arch}.rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {
            "rope_type": "linear",
            "factor": meta.number(f"{arch}.rope.scaling.factor", 1.0),
        }
    elif scaling not in (None, "none"):
        raise GGUFError(
            f"RoPE scaling {scaling!r} is not supported", f"{arch}.rope.scaling.type", unsupported=True
        )
    if "rope_freqs.weight" in tensors:  # Llama 3's RoPE scaling, as per-frequency divisors
        if tensors["rope_freqs.weight"].tensor_type != T.F32:
            raise GGUFError("rope_freqs.weight must be F32", "rope_freqs.weight")
        factors = _floats(tensors["rope_freqs.weight"])
        if factors.shape != (head_dim // 2,) or not np.isfinite(factors).all() or (factors <= 0).any():
            raise GGUFError(
                f"rope_freqs.weight must hold {head_dim // 2} positive numbers", "rope_freqs.weight"
            )
        config["rope_scaling"] = {"rope_type": "freq_factors", "factors": factors.tolist()}
    return config


def _checkpoint_dtype(meta: _Metadata, tensors: dict[str, ReaderTensor]) -> str:
    """The dtype the engine runs a file in by default: its float type, and float32 for quantised files
    (llama.cpp computes their activations in float32 too)."""
    kinds = Counter(t.tensor_type for t in tensors.values() if len(t.shape) == 2)
    common = kinds.most_common(1)[0][0] if kinds else T.F32
    return {T.F16: "float16", T.BF16: "bfloat16"}.get(common, "float32")


def _file_type(meta: _Metadata, tensors: dict[str, ReaderTensor]) -> str:
    value = meta.get("general.file_type")
    try:
        name = LlamaFileType(value).name if isinstance(value, int) else None
    except ValueError:
        name = None
    if name is None:
        kinds = Counter(t.tensor_type.name for t in tensors.values() if len(t.shape) == 2)
        return kinds.most_common(1)[0][0] if kinds else "F32"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _expected_shapes(config: ModelConfig, tensors: dict[str, ReaderTensor]) -> dict[str, tuple[int, ...]]:
    """Every tensor the file must (or, for optional ones present, may) hold, in PyTorch's shape order."""
    h, inter, d = config.hidden_size, config.intermediate_size, config.head_dim
    q, kv = config.num_attention_heads * d, config.num_key_value_heads * d
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (config.vocab_size, h),
        "output_norm.weight": (h,),
    }
    if not config.tie_word_embeddings:
        shapes["output.weight"] = (config.vocab_size, h)
    if "rope_freqs.weight" in tensors:
        shapes["rope_freqs.weight"] = (d // 2,)
    layer = {
        "attn_norm.weight": (h,), "attn_q.weight": (q, h), "attn_k.weight": (kv, h),
        "attn_v.weight": (kv, h), "attn_output.weight": (h, q), "ffn_norm.weight": (h,),
        "ffn_gate.weight": (inter, h), "ffn_up.weight": (inter, h), "ffn_down.weight": (h, inter),
    }  # fmt: skip
    if config.qkv_bias:
        layer |= {"attn_q.bias": (q,), "attn_k.bias": (kv,), "attn_v.bias": (kv,)}
    if config.o_bias:
        layer["attn_output.bias"] = (h,)
    for i in range(config.num_hidden_layers):
        shapes |= {f"blk.{i}.{name}": shape for name, shape in layer.items()}
    return shapes


def _check_tensors(config: ModelConfig, tensors: dict[str, ReaderTensor]) -> None:
    expected = _expected_shapes(config, tensors)
    for name, tensor in tensors.items():
        if name not in expected:
            raise GGUFError(
                f"tensor {name!r} is not part of a {config.model_type} model", name, unsupported=True
            )
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        if shape != expected[name]:
            raise GGUFError(f"tensor {name!r} has shape {list(shape)}, expected {list(expected[name])}", name)
        if tensor.tensor_type not in SUPPORTED_TYPES:
            supported = sorted(t.name for t in SUPPORTED_TYPES)
            raise GGUFError(
                f"tensor {name!r} is {tensor.tensor_type.name}, which is not supported; "
                f"supported: {supported}",
                name,
                unsupported=True,
            )
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise GGUFError(f"the file lacks tensor {missing[0]!r} ({len(missing)} missing)", missing[0])


def load_model(
    path: str | Path,
    dtype: torch.dtype,
    device: torch.device,
    max_positions: int,
    quant_kernels: bool = True,
    to_quantize: bool = False,
) -> LlamaForCausalLM:
    """Our model with the weights of the .gguf file in folder `path` (or the file itself).
    `quant_kernels` False: quantised layers dequantise and multiply (no C kernel). `to_quantize`: the
    caller quantises the linear layers next, so a float matrix narrower in the file than `dtype` (a
    BF16 or F16 file run in fp32) is loaded in the file's dtype: the load then holds its bytes, not
    twice as many, and quantising it gives the same values (the quantiser computes in fp32)."""
    file = Path(path) if Path(path).is_file() else find_file(path)
    if file is None:
        raise FileNotFoundError(f"no .gguf file in {path}")
    gguf = read(file)
    config = ModelConfig.from_dict(gguf.config)
    model = empty_model(config, max_positions, dtype, device)
    pieces: dict[str, list[_Piece]] = defaultdict(list)
    for name, tensor in gguf.tensors.items():
        if name == "rope_freqs.weight":
            continue  # already in the config's RoPE scaling
        target, shard = _target(name)
        weight = _weight(tensor, gguf.architecture, config)
        pieces[target].append(_Piece(shard or 0, weight, tensor.tensor_type in DEQUANTISED_TYPES))
    embedding = pieces["embed_tokens.weight"][0]
    if config.tie_word_embeddings and (embedding.requantise or isinstance(embedding.weight, QuantizedWeight)):
        # The output layer runs on the quantised table (set_quantized leaves the embedding its float copy).
        pieces["lm_head.weight"] = [embedding]
    modules = dict(model.named_modules())
    if to_quantize:
        _stage_narrow_matrices(modules, pieces, dtype)
    requantised = 0
    for target, parts in pieces.items():
        module_name, _, attribute = target.rpartition(".")
        parts.sort(key=lambda piece: piece.shard)
        requantised += _assign(modules[module_name], attribute, parts, dtype, quant_kernels)
    if gguf.dequantised:
        log.info(
            "%s: %d tensors (%s) dequantised at load; %d of them matrices, requantised to int8 (group 32)",
            file.name, len(gguf.dequantised), _types(gguf), requantised,
        )  # fmt: skip
    share_dequant_scratch(model)
    return model.eval()


Weight = torch.Tensor | QuantizedWeight


@dataclass(frozen=True)
class _Piece:
    """One tensor of the file bound for (a shard of) one parameter; `requantise`: a type the engine
    does not run on (a K-quant, ...), already dequantised here."""

    shard: int
    weight: Weight
    requantise: bool


def _target(name: str) -> tuple[str, int | None]:
    stem, _, kind = name.rpartition(".")
    if stem in _GLOBAL_TENSORS:
        return f"{_GLOBAL_TENSORS[stem]}.{kind}", None
    _, index, part = stem.split(".", 2)
    ours, shard = _LAYER_TENSORS[part]
    return f"layers.{index}.{ours}.{kind}", shard


def _weight(tensor: ReaderTensor, arch: str, config: ModelConfig) -> Weight:
    """One tensor in PyTorch's layout: a float tensor, or a QuantizedWeight for Q8_0/Q4_0."""
    kind = tensor.tensor_type
    value: Weight
    if kind in SPLIT_TYPES:
        value = _split_blocks(tensor)
    elif kind == T.BF16:
        value = _from_numpy(tensor.data.view(np.int16)).view(torch.bfloat16)
    elif kind in (T.F32, T.F16):
        value = _from_numpy(tensor.data)
    else:
        value = torch.from_numpy(_floats(tensor))
    if arch == "llama" and tensor.name.split(".")[-2] in ("attn_q", "attn_k"):
        heads = config.num_attention_heads if ".attn_q." in tensor.name else config.num_key_value_heads
        value = _rows(value, _unpermute(heads, config.head_dim))
    return value


def _floats(tensor: ReaderTensor) -> np.ndarray:
    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
    if tensor.tensor_type in (T.F32, T.F16):
        return np.asarray(tensor.data, dtype=np.float32).reshape(shape)
    return gguf_quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(shape)


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # the memory map is read-only; we only ever copy out of it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _split_blocks(tensor: ReaderTensor) -> QuantizedWeight:
    """Q8_0 / Q4_0 rows of 32-value blocks (an fp16 scale, then 32 int8 values or 16 bytes of packed
    nibbles) as a QuantizedWeight with group size 32: the same bytes, regrouped."""
    k, n = (int(v) for v in tensor.shape.tolist())
    blocks = np.asarray(tensor.data).reshape(n, k // _BLOCK, -1)
    scales = torch.from_numpy(np.ascontiguousarray(blocks[..., :2]).view(np.float16).reshape(n, k // _BLOCK))
    values = np.ascontiguousarray(blocks[..., 2:])
    if tensor.tensor_type == T.Q8_0:
        return QuantizedWeight("int8", torch.from_numpy(values.view(np.int8).reshape(n, k)), scales, _BLOCK)
    return QuantizedWeight("int4", torch.from_numpy(values.reshape(n, k // 2)), scales, _BLOCK)


def _unpermute(heads: int, head_dim: int) -> torch.Tensor:
    """Row order that undoes llama.cpp's RoPE permutation: its row (head, j, half) is Hugging Face's
    row (head, half, j)."""
    rows = torch.arange(heads * head_dim).reshape(heads, head_dim // 2, 2)
    return rows.transpose(1, 2).reshape(-1)


def _rows(value: Weight, order: torch.Tensor) -> Weight:
    if isinstance(value, QuantizedWeight):
        return QuantizedWeight(value.format, value.qweight[order], value.scales[order], value.group_size)
    return value[order]


def _stage_narrow_matrices(
    modules: dict[str, nn.Module], pieces: dict[str, list[_Piece]], dtype: torch.dtype
) -> None:
    """Give each linear layer whose file matrices are all of one float dtype narrower than `dtype` a
    weight of that dtype to load into (see `load_model`'s `to_quantize`)."""
    for target, parts in pieces.items():
        module_name, _, attribute = target.rpartition(".")
        module = modules[module_name]
        floats = [p.weight for p in parts if isinstance(p.weight, torch.Tensor) and not p.requantise]
        if not isinstance(module, Linear) or attribute != "weight" or len(floats) != len(parts):
            continue
        kinds = {w.dtype for w in floats}
        narrow = kinds.pop()
        if not kinds and narrow.itemsize < dtype.itemsize:
            stage_weight(module, narrow)


def _assign(module: nn.Module, attribute: str, parts: list[_Piece], dtype: torch.dtype, kernels: bool) -> int:
    """Put one parameter's parts (the shards of a fused matrix, in order) into `module`: a linear layer's
    Q8_0/Q4_0 weight as it is, one of another quantised type requantised to int8 (rather than serve a
    quantised file's matrix in float: llama-quantize's Q6_K output layer is a quarter of a small
    model's weights), anything else in floats. Returns how many matrices it requantised."""
    weights = [p.weight for p in parts]
    quantised = [w for w in weights if isinstance(w, QuantizedWeight)]
    if isinstance(module, Linear) and attribute == "weight":
        if len(quantised) == len(parts) and len({q.format for q in quantised}) == 1:
            qweight = torch.cat([q.qweight for q in quantised])
            scales = torch.cat([q.scales for q in quantised])
            set_quantized(module, QuantizedWeight(quantised[0].format, qweight, scales, _BLOCK), kernels)
            return 0
        if any(p.requantise for p in parts):
            floats = torch.cat(
                [dequantize(w) if isinstance(w, QuantizedWeight) else w.float() for w in weights]
            )
            set_quantized(module, quantize(floats, "int8", _BLOCK), kernels)
            return 1
    param: torch.Tensor = getattr(module, attribute)  # in `dtype`, or a narrower one staged
    start = 0
    for weight in weights:
        value = dequantize(weight, dtype) if isinstance(weight, QuantizedWeight) else weight
        with torch.no_grad():
            param.data[start : start + value.shape[0]].copy_(value.to(param.dtype))
        start += value.shape[0]
    return 0


def _types(gguf: GGUFModel) -> str:
    counts = Counter(gguf.tensors[name].tensor_type.name for name in gguf.dequantised)
    return ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
