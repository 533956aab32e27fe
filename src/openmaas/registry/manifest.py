"""The manifest every model version's folder holds, however the version was made (trained,
imported, optimised): `manifest.json`, with its format version and at least the task.

Only JSON here: what the other files of a folder hold is the business of whoever made it
(`training.artifact` for trained models, the importers for Hugging Face folders and ONNX files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openmaas.errors import ValidationFailed

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# `source` of a LoRA adapter a fine-tuning job registered: weights that only mean something on top
# of their base version (`base_version_id`), not a model of their own.
LORA_ADAPTER = "lora-adapter"


def is_adapter(manifest: dict[str, Any] | None) -> bool:
    return bool(manifest) and manifest.get("source") == LORA_ADAPTER  # type: ignore[union-attr]


def read_manifest(path: Path | str) -> dict[str, Any]:
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise ValidationFailed(f"{path} is not a model artifact (no {MANIFEST})", param="artifact")
    manifest: dict[str, Any] = json.loads(file.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValidationFailed(
            f"unsupported artifact format {manifest.get('format_version')!r}", param="artifact"
        )
    return manifest
