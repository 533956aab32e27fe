"""Imports of Hugging Face model folders (uploaded as a zip) into the registry.

The folder's `config.json` says what it is: a Llama/Qwen2/Mistral causal LM becomes a
`text-generation` version, a sentence-transformers BERT folder a `sentence-embedding` version, a
BERT sequence classifier a `text-classification` version. Weights must be safetensors: pickled
weights (`.bin`, `.pt`, `.pkl`, …) are refused, never opened. The archive is checked entry by
entry (no absolute paths, no `..`, no links, bounded expansion) while it is extracted into the
new artifact folder, which is removed on any error.
"""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from safetensors import safe_open

from openmaas import errors
from openmaas.datasets.archive import check_entry_name
from openmaas.schemas import free_form
from openmaas.tasks import SENTENCE_EMBEDDING, TEXT_GENERATION, Task

CAUSAL_LM_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "MistralForCausalLM": "llama",
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
_CHUNK = 1024 * 1024
MAX_RATIO = 1000.0  # safetensors barely compress; a higher ratio means a zip bomb
# config.json goes whole into the version's manifest; real ones are a few KB (a label map of
# thousands of classes, a few hundred).
MAX_CONFIG_BYTES = 1024 * 1024


def _bad(message: str, code: str = "invalid_model_folder") -> errors.ValidationFailed:
    return errors.ValidationFailed(message, param="file", code=code)


def install(upload: Path, dest: Path, *, max_bytes: int) -> dict[str, Any]:
    """Extract the zipped folder `upload` into the new artifact folder `dest` and check it;
    returns its manifest. On any error `dest` is removed and nothing is left."""
    extract(upload, dest, max_bytes=max_bytes)
    try:
        return inspect_folder(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def extract(archive_path: Path, dest: Path, *, max_bytes: int) -> None:
    """Extract a zip safely into `dest` (which must not exist); on error nothing is left."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _bad(f"the upload is not a readable zip archive: {exc}", "corrupt_archive") from exc
    dest.mkdir(parents=True)
    try:
        with archive:
            names = [(info, check_entry_name(info)) for info in archive.infolist() if not info.is_dir()]
            prefix = _common_folder([path for _, path in names])
            total = 0
            for info, path in names:
                relative = PurePosixPath(*path.parts[len(prefix) :])
                target = dest.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                total = _copy_entry(archive, info, target, total, max_bytes)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _copy_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, total: int, limit: int) -> int:
    written = 0
    try:
        with archive.open(info) as source, open(target, "wb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                total += len(chunk)
                if total > limit:
                    raise errors.PayloadTooLarge(
                        f"the model expands to more than {limit} bytes", param="file", code="zip_bomb"
                    )
                if written > _CHUNK and written > MAX_RATIO * max(info.compress_size, 1):
                    raise _bad(f"{info.filename!r} has an implausible compression ratio", "zip_bomb")
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise _bad(f"the archive is corrupt at {info.filename!r}: {exc}", "corrupt_archive") from exc
    return total


def _common_folder(paths: list[PurePosixPath]) -> tuple[str, ...]:
    """A single top-level folder shared by every entry (zipping `folder/` gives one) is dropped."""
    if paths and all(len(p.parts) > 1 for p in paths):
        first = paths[0].parts[0]
        if all(p.parts[0] == first for p in paths):
            return (first,)
    return ()


def inspect_folder(folder: Path) -> dict[str, Any]:
    """Check an extracted folder and return its manifest (what it holds), or raise naming what is
    wrong."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    pickled = [name for name in files if name.lower().endswith(PICKLE_SUFFIXES)]
    if pickled:
        raise _bad(
            f"pickled weights are refused ({pickled[0]}); convert them to safetensors", "pickle_refused"
        )
    weights = [name for name in files if name.endswith(".safetensors")]
    if not weights:
        raise _bad("the folder has no .safetensors weights")
    for name in weights:
        try:
            with safe_open(str(folder / name), framework="pt") as handle:
                handle.keys()
        except Exception as exc:
            raise _bad(f"{name} is not a valid safetensors file: {exc}", "corrupt_weights") from exc
    config = _read_json(folder, "config.json")
    task, architecture = _classify(folder, config)
    if "tokenizer.json" not in files:  # every task we import tokenises text
        raise _bad("the folder has no tokenizer.json")
    return {
        "task": task,
        "source": "huggingface",
        "architecture": architecture,
        "config": {k: config[k] for k in sorted(config) if not k.startswith("_")},
        "files": files,
        "size_bytes": sum((folder / name).stat().st_size for name in files),
        "metrics": {},
    }


def _classify(folder: Path, config: dict[str, Any]) -> tuple[str, str]:
    architectures = config.get("architectures") or []
    for name in architectures:
        if name in CAUSAL_LM_ARCHITECTURES:
            return TEXT_GENERATION, name
    model_type = config.get("model_type")
    if model_type == "bert":
        if any("SequenceClassification" in name for name in architectures):
            return Task.TEXT_CLASSIFICATION.value, "BertForSequenceClassification"
        if (folder / "modules.json").exists() or (folder / "1_Pooling").exists():
            return SENTENCE_EMBEDDING, "BertModel"
    raise _bad(
        f"unsupported model: architectures {architectures}, model_type {model_type!r}; supported are "
        f"{sorted(CAUSAL_LM_ARCHITECTURES)}, BERT sentence encoders and BertForSequenceClassification",
        "unsupported_model",
    )


def _read_json(folder: Path, name: str) -> dict[str, Any]:
    """A JSON object file of the folder, as it will be stored in the manifest and served back:
    bounded in size and depth, numbers finite (NaN and Infinity are not JSON; PostgreSQL refuses
    them)."""
    path = folder / name
    if not path.exists():
        raise _bad(f"the folder has no {name}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise _bad(f"{name} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = json.loads(path.read_bytes(), parse_constant=_not_json, parse_float=_finite)
    except RecursionError as exc:
        raise _bad(f"{name} is not valid JSON: it nests too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, and ours
        raise _bad(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _bad(f"{name} must hold a JSON object")
    if free_form.depth(data) > free_form.MAX_DEPTH:
        raise _bad(f"{name} must not nest deeper than {free_form.MAX_DEPTH} levels")
    return data


def _not_json(literal: str) -> Any:
    raise ValueError(f"{literal} is not a JSON number")


def _finite(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"{literal} is too large for a number")
    return number
