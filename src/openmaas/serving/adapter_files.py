"""Local copies of fine-tuned adapters' files, made once per process from the artifact store, for
an LLM engine to read (it reads an adapter when it first loads it into a slot, and again when its
slots widen, so the folder must outlive the request).

Used by the API server for its in-process deployments (serving/adapters.py) and by each Ray LLM
replica for its own engine (serving/ray_llm.py): a replica reaches the shared store itself, so an
adapter's files never pass through the API server. `StoredAdapter` is what a request carries to a
replica: which weights, and where they are stored.

A process killed without cleaning up leaves its folder behind; the next one to start on the
machine removes the folders whose process is gone.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from openmaas import errors
from openmaas.engine.lora import LoraRequest, read_adapter
from openmaas.storage import ArtifactStore, process_alive

_PREFIX = "openmaas-adapters-"
_HOST = socket.gethostname()


@dataclass(frozen=True)
class StoredAdapter:
    """One adapter's weights as a request names them."""

    lora_id: str  # the engine's key for the weights: the adapter version's id, or a checkpoint's
    artifact: str  # its folder in the artifact store
    model: str  # the id it was called by, for messages


class AdapterFiles:
    """Adapters copied to a private folder of this process, each checked once per engine rank."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store
        self._local: dict[str, Path] = {}  # lora id -> its local copy
        self._checked: set[tuple[str, int]] = set()  # (lora id, max rank) found servable
        self._lock = threading.Lock()
        self._folder: Path | None = None

    def ready(self, adapter: StoredAdapter, max_rank: int) -> LoraRequest | None:
        """The adapter's request when it is copied and checked already (no file is read), else None."""
        local = self._local.get(adapter.lora_id)
        if local is None or (adapter.lora_id, max_rank) not in self._checked:
            return None
        return LoraRequest(adapter.lora_id, local)

    def prepare(self, adapter: StoredAdapter, max_rank: int) -> LoraRequest:
        """Copy the adapter's files here (once) and check that an engine of `max_rank` can serve it
        (400 naming `model` if not; 404 if its files are gone), before its request is admitted: a
        stream refused once begun would break its connection. Blocking: call it off the event loop."""
        with self._lock:
            local = self._local.get(adapter.lora_id)
            if local is None:
                local = self._private_folder() / adapter.lora_id
                try:
                    with self._store.reading(adapter.artifact) as folder:
                        shutil.copytree(folder, local, dirs_exist_ok=True)
                except FileNotFoundError:  # deleted since it was looked up
                    shutil.rmtree(local, ignore_errors=True)
                    raise errors.NotFound(
                        f"The model {adapter.model!r} does not exist.", param="model", code="model_not_found"
                    ) from None
                self._local[adapter.lora_id] = local
        lora = LoraRequest(adapter.lora_id, local)
        read_adapter(lora, max_rank)
        self._checked.add((adapter.lora_id, max_rank))
        return lora

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _private_folder(self) -> Path:
        if self._folder is None:
            _clear_abandoned()
            prefix = f"{_PREFIX}{_HOST}-{os.getpid()}-"
            self._folder = Path(tempfile.mkdtemp(prefix=prefix))
        return self._folder


def _clear_abandoned() -> None:
    """Remove the folders that processes of this machine, now gone, left behind."""
    for entry in Path(tempfile.gettempdir()).glob(f"{_PREFIX}{_HOST}-*"):
        pid = entry.name.removeprefix(f"{_PREFIX}{_HOST}-").partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
