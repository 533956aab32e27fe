"""Checkpoint serialisation without pickle: nested state (dicts, lists, numbers, tensors) becomes
one safetensors blob whose metadata holds the JSON skeleton, so a checkpoint written by one worker
process can be resumed by another.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

State = dict[str, Any]
_META_KEY = "openmaas.state"


def _pack(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {"__map__": [[key, _pack(item, tensors)] for key, item in value.items()]}
    if isinstance(value, list | tuple):
        return [_pack(item, tensors) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _unpack(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        return {key: _unpack(item, tensors) for key, item in value["__map__"]}
    if isinstance(value, list):
        return [_unpack(item, tensors) for item in value]
    return value


def checkpoint_to_bytes(state: State) -> bytes:
    """Serialise nested training state into one safetensors blob."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(state, tensors)
    return save(tensors, metadata={_META_KEY: json.dumps(skeleton)})


def checkpoint_from_bytes(blob: bytes) -> State:
    """Rebuild the state written by `checkpoint_to_bytes`."""
    # safetensors layout: 8-byte little-endian header length, then the JSON header.
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    skeleton = json.loads(header["__metadata__"][_META_KEY])
    state: State = _unpack(skeleton, load(blob))
    return state


def write_checkpoint(state: State, path: Path) -> None:
    """Write a checkpoint file atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(checkpoint_to_bytes(state))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: Path) -> State:
    return checkpoint_from_bytes(path.read_bytes())
