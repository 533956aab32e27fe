"""Saving and loading fitted preprocessors: JSON metadata plus a safetensors file of arrays.

The `kind` in the metadata picks the class; nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from openmaas.datasets.preprocessing.audio import AudioPreprocessor
from openmaas.datasets.preprocessing.base import FittedPreprocessor
from openmaas.datasets.preprocessing.image import ImagePreprocessor
from openmaas.datasets.preprocessing.interactions import InteractionIndex
from openmaas.datasets.preprocessing.tabular import TabularPreprocessor
from openmaas.datasets.preprocessing.text import TextPreprocessor
from openmaas.errors import ValidationFailed

_KINDS: dict[str, Any] = {
    cls.kind: cls
    for cls in (TabularPreprocessor, TextPreprocessor, ImagePreprocessor, AudioPreprocessor, InteractionIndex)
}


def preprocessor_from_state(meta: dict[str, Any], arrays: dict[str, torch.Tensor]) -> FittedPreprocessor:
    cls = _KINDS.get(meta.get("kind", ""))
    if cls is None:
        raise ValidationFailed(f"unknown preprocessing kind {meta.get('kind')!r}", param="preprocessing.kind")
    return cls.from_state(meta, arrays)


def save_preprocessor(
    preprocessor: FittedPreprocessor, folder: Path, name: str = "preprocessing"
) -> dict[str, Any]:
    """Write `<name>.json` and `<name>.safetensors` into `folder`; return the metadata."""
    meta, arrays = preprocessor.state()
    (folder / f"{name}.json").write_text(json.dumps(meta))
    save_file({key: value.contiguous() for key, value in arrays.items()}, str(folder / f"{name}.safetensors"))
    return meta


def load_preprocessor(folder: Path, name: str = "preprocessing") -> FittedPreprocessor:
    meta = json.loads((folder / f"{name}.json").read_text())
    return preprocessor_from_state(meta, load_file(str(folder / f"{name}.safetensors")))
