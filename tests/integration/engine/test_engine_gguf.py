"""GGUF files (written as llama.cpp's converter lays them out) load into our engine with the weights,
hyperparameters, tokenizer and chat template of the Hugging Face folder they came from."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf import quants as gguf_quants

from openmaas.engine import SamplingParams
from openmaas.engine.models import gguf, loader
from openmaas.engine.models.config import ModelConfig
from openmaas.engine.models.loader import load_model
from openmaas.engine.quant import QuantFormat, QuantizedWeight, dequantize, quantize
from openmaas.engine.testing import write_gguf
from openmaas.engine.tokenizer import Tokenizer

from .conftest import ARCHS, make_engine, random_prompts

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gguf_dirs(
    model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], Path]:
    """(arch, file type) -> a folder holding model.gguf and the companions rebuilt from it."""
    root = tmp_path_factory.mktemp("gguf")
    folders = {}
    for arch in ARCHS:
        for file_type in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0"):
            folder = root / f"{arch}-{file_type}"
            folder.mkdir()
            gguf.prepare_folder(write_gguf(model_dirs[arch], folder / "model.gguf", file_type))
            folders[arch, file_type] = folder
    return folders


def _greedy(folder: Path, prompts: list[list[int]], **options: object) -> list[list[int]]:
    engine = make_engine(folder, **{"cpu_kernels": False, **options})
    results = engine.generate(prompts, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))
    return [r[0].token_ids for r in results]


@pytest.mark.parametrize("arch", ARCHS)
def test_f32_file_generates_the_folders_greedy_tokens(arch, model_dirs, gguf_dirs) -> None:  # type: ignore[no-untyped-def]
    prompts = random_prompts([7, 30], seed=3)
    assert _greedy(gguf_dirs[arch, "F32"], prompts) == _greedy(model_dirs[arch], prompts)


@pytest.mark.parametrize(("file_type", "dtype"), [("F16", "float16"), ("BF16", "bfloat16")])
def test_half_files_generate_as_the_folder_in_that_dtype(file_type, dtype, model_dirs, gguf_dirs) -> None:  # type: ignore[no-untyped-def]
    prompts = random_prompts([11], seed=5)
    ours = _greedy(gguf_dirs["llama", file_type], prompts, dtype=dtype)
    assert ours == _greedy(model_dirs["llama"], prompts, dtype=dtype)


def test_hyperparameters_come_from_the_file(model_dirs, gguf_dirs) -> None:  # type: ignore[no-untyped-def]
    for arch in ARCHS:
        theirs = ModelConfig.from_pretrained(model_dirs[arch])
        ours = ModelConfig.from_pretrained(gguf_dirs[arch, "Q4_0"])
        for key in ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
                    "max_position_embeddings", "tie_word_embeddings", "qkv_bias", "rope_theta"):  # fmt: skip
            assert getattr(ours, key) == getattr(theirs, key), (arch, key)
        # <|im_end|> (the eos), and <|endoftext|>, which llama.cpp also ends a generation at.
        assert ours.eos_token_ids == [2, 0] and ours.checkpoint_dtype == "float32"
    assert ModelConfig.from_pretrained(gguf_dirs["qwen2", "BF16"]).checkpoint_dtype == "bfloat16"


@pytest.mark.parametrize("file_type", ["Q8_0", "Q4_0"])
def test_quantised_blocks_split_bit_for_bit(file_type, gguf_dirs) -> None:  # type: ignore[no-untyped-def]
    """Every Q8_0/Q4_0 block becomes a scale and values of a QuantizedWeight whose float reference
    equals gguf-py's own dequantisation exactly."""
    model = gguf.read(gguf_dirs["qwen2", file_type] / "model.gguf")
    split = [t for t in model.tensors.values() if t.tensor_type == GGMLQuantizationType[file_type]]
    assert len(split) == 15  # every matrix: 7 per layer and the (tied) embedding
    for tensor in split:
        weight = gguf._split_blocks(tensor)
        assert weight.format == {"Q8_0": "int8", "Q4_0": "int4"}[file_type] and weight.group_size == 32
        expected = gguf_quants.dequantize(tensor.data, tensor.tensor_type)
        assert torch.equal(dequantize(weight), torch.from_numpy(expected)), tensor.name


def _file_values(weight: torch.Tensor, qtype: GGMLQuantizationType) -> torch.Tensor:
    """`weight` as a file of type `qtype` holds it (quantised with gguf-py, as the converter does)."""
    values = gguf_quants.dequantize(gguf_quants.quantize(weight.float().numpy(), qtype), qtype)
    return torch.from_numpy(values)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file_type", ["Q8_0", "Q4_0", "Q5_0"])
def test_quantised_files_load_the_values_of_their_blocks(arch, file_type, model_dirs, gguf_dirs) -> None:  # type: ignore[no-untyped-def]
    """Every linear layer runs on the file's quantised values of the folder's weight (llama's Q/K rows
    back in Hugging Face order); Q5_0, a type we do not run on, requantised to int8; the embedding in
    floats, and a tied output layer on the embedding's quantised table."""
    from transformers import AutoModelForCausalLM

    qtype = GGMLQuantizationType[file_type]
    loaded = load_model(gguf_dirs[arch, file_type], torch.float32, CPU, 64)
    modules = dict(loaded.named_modules())
    hf = AutoModelForCausalLM.from_pretrained(model_dirs[arch], dtype=torch.float32)
    config = ModelConfig.from_pretrained(model_dirs[arch])
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    fused = {
        "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", q), "v_proj": ("qkv_proj", q + kv),
        "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", config.intermediate_size),
    }  # fmt: skip
    state = hf.state_dict()
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    for name, value in state.items():
        if value.dim() != 2:
            continue
        expected = _file_values(value, qtype)
        module_name, start = name.removeprefix("model.").removesuffix(".weight"), 0
        for part, (ours, offset) in fused.items():
            if module_name.endswith(f".{part}"):
                module_name, start = module_name.replace(part, ours), offset
                break
        module = modules[module_name]
        if module_name == "embed_tokens":
            assert torch.equal(module.weight, expected)
            continue
        assert module.quantized is not None, name
        assert module.quantized.format == {"Q8_0": "int8", "Q4_0": "int4", "Q5_0": "int8"}[file_type]
        if file_type == "Q5_0":
            expected = dequantize(quantize(expected, "int8"))
        got = dequantize(module.quantized)[start : start + value.shape[0]]
        assert torch.equal(got, expected), name


@pytest.fixture(scope="module")
def requantised_dirs(
    model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """(arch, file type) -> the Hugging Face folder with every matrix replaced by the values a file of
    that type (and a Q8_0 output matrix) holds: what our own load-time quantisation, on the same
    format (int8 for the lm_head), turns into the same blocks bit for bit."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("requantised")

    def build(arch: str, file_type: str) -> Path:
        folder = root / f"{arch}-{file_type}"
        if not folder.exists():
            shutil.copytree(model_dirs[arch], folder)
            weights = load_file(str(folder / "model.safetensors"))
            tied = "lm_head.weight" not in weights
            output = "model.embed_tokens.weight" if tied else "lm_head.weight"
            values = {
                name: _file_values(w, GGMLQuantizationType["Q8_0" if name == output else file_type])
                if w.dim() == 2
                else w
                for name, w in weights.items()
            }
            save_file(values, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder

    return build


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("file_type", "quantization"), [("Q8_0", "int8"), ("Q4_0", "int4")])
def test_quantised_files_generate_as_the_folder_quantised_by_us(  # type: ignore[no-untyped-def]
    arch, file_type, quantization, model_dirs, requantised_dirs, tmp_path: Path
) -> None:
    """The file's engine (its layers on the file's blocks, through the quantised kernels) gives the
    greedy tokens of the folder quantised at load by `engine.quantization` to the same values. Its
    output matrix is Q8_0, as llama-quantize keeps it at a higher precision (and our quantisation
    keeps the lm_head int8)."""
    gguf.prepare_folder(write_gguf(model_dirs[arch], tmp_path / "model.gguf", file_type, output_type="Q8_0"))
    prompts = random_prompts([9, 26], seed=7)
    reference = requantised_dirs(arch, file_type)
    assert _greedy(tmp_path, prompts, cpu_kernels=True) == _greedy(
        reference, prompts, cpu_kernels=True, quantization=quantization
    )


def test_a_quantised_file_is_not_quantised_again(gguf_dirs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="already holds quantised weights"):
        load_model(gguf_dirs["llama", "Q4_0"], torch.float32, CPU, 64, quantization="int8")
    floats = load_model(gguf_dirs["llama", "F32"], torch.float32, CPU, 64, quantization="int4")
    assert floats.layers[0].mlp.down_proj.quantized is not None


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file_type", ["BF16", "F16"])
def test_a_half_file_quantised_at_load_reads_its_matrices_in_their_dtype(  # type: ignore[no-untyped-def]
    arch, file_type, gguf_dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`quantization` on a BF16/F16 file run in fp32: every linear layer's matrix reaches the quantiser
    in the file's dtype (the load holds the file's bytes for them, not fp32's) and is quantised to the
    values an fp32 load gives; the layers then report fp32, as every other parameter."""
    half = {"BF16": torch.bfloat16, "F16": torch.float16}[file_type]
    real, seen = loader.quantize, []

    def recording(weight: torch.Tensor, fmt: QuantFormat, group_size: int = 32) -> QuantizedWeight:
        seen.append(weight.dtype)
        return real(weight, fmt, group_size)

    with monkeypatch.context() as patched:
        patched.setattr(loader, "quantize", recording)
        model = load_model(gguf_dirs[arch, file_type], torch.float32, CPU, 64, quantization="int4")
    tied = ModelConfig.from_pretrained(gguf_dirs[arch, file_type]).tie_word_embeddings
    # 4 linear layers per decoder layer, and an output layer: tied, it is the fp32 embedding's table.
    assert seen == [half] * (4 * len(model.layers)) + [torch.float32 if tied else half]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    plain = dict(load_model(gguf_dirs[arch, file_type], torch.float32, CPU, 64).named_modules())
    quantised = [(n, m) for n, m in model.named_modules() if getattr(m, "quantized", None) is not None]
    assert len(quantised) == len(seen)
    for name, module in quantised:
        expected = quantize(plain[name].weight, module.quantized.format, module.quantized.group_size)
        assert torch.equal(module.quantized.qweight, expected.qweight), name
        assert torch.equal(module.quantized.scales, expected.scales), name


def test_the_tokenizer_and_chat_template_match_the_originals(model_dirs, gguf_dirs) -> None:  # type: ignore[no-untyped-def]
    theirs = Tokenizer.from_pretrained(model_dirs["qwen2"])
    ours = Tokenizer.from_pretrained(gguf_dirs["qwen2", "Q4_0"])
    texts = ["The quick brown fox.", "Héllo wörld — naïve café, 東京, 😀 emoji", "  two  spaces\n\n\ttab",
             "<|im_start|>user\nhi<|im_end|><|endoftext|>", "numbers 1234567 and symbols !?{}"]  # fmt: skip
    for text in texts:
        ids = theirs.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == theirs.decode(ids)
        assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids, skip_special_tokens=False)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 東京"}]
    assert ours.apply_chat_template(messages) == theirs.apply_chat_template(messages)
    assert ours.eos_token_id == theirs.eos_token_id == 2


def _rewrite(
    source: Path,
    target: Path,
    *,
    arch: str | None = None,
    int_tensor: str | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """A copy of a GGUF file with another architecture name, one tensor stored as I32, or `extra`
    tensors."""
    reader = GGUFReader(source)
    writer = GGUFWriter(str(target), arch or str(reader.fields["general.architecture"].contents()))
    old_arch = str(reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value, kind = field.contents(), field.types[0]
        new_key = key.replace(f"{old_arch}.", f"{arch}.", 1) if arch else key
        sub = field.types[-1] if len(field.types) > 1 else None
        writer.add_key_value(new_key, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        if tensor.name == int_tensor:
            writer.add_tensor(tensor.name, np.zeros(tuple(reversed(tensor.shape.tolist())), dtype=np.int32))
        else:
            writer.add_tensor(tensor.name, np.asarray(tensor.data), raw_dtype=tensor.tensor_type)
    for name, array in (extra or {}).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def test_bad_files_are_refused_naming_the_field(gguf_dirs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = gguf_dirs["llama", "Q8_0"] / "model.gguf"
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    for path in (garbage, truncated):
        with pytest.raises(gguf.GGUFError) as refused:
            gguf.read(path)
        assert refused.value.field == "file" and not refused.value.unsupported
    cases = [
        (_rewrite(source, tmp_path / "gpt2.gguf", arch="gpt2"), "general.architecture"),
        (_rewrite(source, tmp_path / "int.gguf", int_tensor="blk.1.ffn_up.weight"), "blk.1.ffn_up.weight"),
    ]
    for path, field in cases:
        with pytest.raises(gguf.GGUFError) as refused:
            gguf.read(path)
        assert refused.value.field == field and refused.value.unsupported, refused.value


def test_llama3_rope_factors_scale_the_rotary_frequencies(gguf_dirs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Llama 3's RoPE scaling arrives as a `rope_freqs` tensor of per-frequency divisors."""
    from openmaas.engine.models.llama import rope_inv_freq

    source = gguf_dirs["llama", "F32"] / "model.gguf"
    head_dim = ModelConfig.from_pretrained(gguf_dirs["llama", "F32"]).head_dim
    factors = np.linspace(1.0, 8.0, head_dim // 2, dtype=np.float32)
    scaled = ModelConfig.from_dict(
        gguf.read(_rewrite(source, tmp_path / "rope.gguf", extra={"rope_freqs.weight": factors})).config
    )
    plain = ModelConfig.from_pretrained(gguf_dirs["llama", "F32"])
    assert torch.allclose(rope_inv_freq(scaled), rope_inv_freq(plain) / torch.from_numpy(factors))
    gguf.load_model(tmp_path / "rope.gguf", torch.float32, CPU, 64)  # the tensor is no parameter of ours
