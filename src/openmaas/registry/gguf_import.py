"""Imports of GGUF files (llama.cpp's format) into the registry, as `text-generation` versions served by
our engine.

The file is checked before anything is registered, by the code that will load it
(`openmaas.engine.models.gguf`): a Llama or Qwen2 architecture, complete hyperparameters, a byte-level
BPE vocabulary, and every tensor present with its shape and a type the engine loads. The version's
folder holds the file as `model.gguf` beside the config.json, tokenizer.json and tokenizer_config.json
rebuilt from its metadata; its manifest records the file type and each tensor's type.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from openmaas import errors
from openmaas.engine.models import gguf
from openmaas.tasks import TEXT_GENERATION

GGUF_FILE = "model.gguf"
GGUF_MAGIC = b"GGUF"


def _bad(message: str, code: str = "invalid_gguf") -> errors.ValidationFailed:
    return errors.ValidationFailed(message, param="file", code=code)


def install(upload: Path, dest: Path) -> dict[str, Any]:
    """Check the GGUF file `upload` and move it into the new artifact folder `dest` with its companion
    files; returns the manifest. On any error `dest` is removed and nothing is left."""
    model = inspect(upload)
    dest.mkdir(parents=True)
    try:
        shutil.move(upload, dest / GGUF_FILE)
        gguf.write_companions(model, dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return manifest(model, dest)


def inspect(path: Path) -> gguf.GGUFModel:
    """The checked file, or ValidationFailed naming what is wrong (the field or tensor in `message`)."""
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise _bad("the upload is not a GGUF file (it does not start with 'GGUF')")
    try:
        return gguf.read(path)
    except gguf.GGUFError as exc:
        code = "unsupported_model" if exc.unsupported else "invalid_gguf"
        where = "" if exc.field == "file" else f" ({exc.field})"
        raise _bad(f"the GGUF file cannot be served{where}: {exc}", code) from exc


def manifest(model: gguf.GGUFModel, folder: Path) -> dict[str, Any]:
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    types = model.tensor_types
    return {
        "task": TEXT_GENERATION,
        "source": "gguf",
        "architecture": model.config["architectures"][0],
        "config": model.config,
        "gguf": {
            "architecture": model.architecture,
            "file_type": model.file_type,
            "type_counts": dict(sorted(Counter(types.values()).items())),
            "tensor_types": types,
            "dequantised_at_load": model.dequantised,
        },
        "files": files,
        "size_bytes": sum((folder / name).stat().st_size for name in files),
        "metrics": {},
    }
