"""How a training run talks to whatever runs it: the `TrainingContext` protocol.

`JobTrainingContext` (job_context.py) implements it for a `train` job, over the job's events and
its folder in the artifact store; `InMemoryContext` and `DirectoryContext` here serve tests,
benchmarks and plain library use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from openmaas.storage import ArtifactStore, LocalArtifactStore
from openmaas.training.checkpoint import State, checkpoint_from_bytes, checkpoint_to_bytes, read_checkpoint
from openmaas.training.checkpoint import write_checkpoint as write_checkpoint_file


class TrainingContext(Protocol):
    def report(self, metrics: dict[str, Any]) -> None:
        """Record progress: one call per epoch with `epoch`, `train_loss` and `val_*` metrics."""
        ...

    def save_checkpoint(self, state: State) -> None:
        """Persist resumable state (use `checkpoint_to_bytes` to store it as one blob)."""
        ...

    def latest_checkpoint(self) -> State | None:
        """The last saved state, or None for a fresh run."""
        ...

    def should_stop(self) -> bool:
        """True when the run must stop now (cancelled, paused, lease lost)."""
        ...


class InMemoryContext:
    """Keeps reports and the latest checkpoint (serialised, as a real store would) in memory."""

    def __init__(self, stop_when: Callable[[InMemoryContext], bool] | None = None) -> None:
        self.reports: list[dict[str, Any]] = []
        self.checkpoints_saved = 0
        self._blob: bytes | None = None
        self._stop_when = stop_when

    def report(self, metrics: dict[str, Any]) -> None:
        self.reports.append(dict(metrics))

    def save_checkpoint(self, state: State) -> None:
        self._blob = checkpoint_to_bytes(state)
        self.checkpoints_saved += 1

    def latest_checkpoint(self) -> State | None:
        return None if self._blob is None else checkpoint_from_bytes(self._blob)

    def should_stop(self) -> bool:
        return self._stop_when is not None and self._stop_when(self)


class CheckpointFolder:
    """Checkpoints as files `checkpoint-<epoch>.safetensors` in one folder of an artifact store,
    each published whole; the latest is what a resumed run starts from (on any machine that reaches
    the store). `keep`: how many to keep (None: all)."""

    _NAME = re.compile(r"checkpoint-(\d+)\.safetensors")

    def __init__(self, store: ArtifactStore, folder: str, keep: int | None = None) -> None:
        self.store = store
        self.folder = folder
        self.keep = keep

    def save(self, state: State, step: int) -> str:
        relative = f"{self.folder}/checkpoint-{step:06d}.safetensors"
        with self.store.staged(relative) as path:
            write_checkpoint_file(state, path)
        if self.keep is not None:
            for old in self._names()[: -self.keep]:
                self.store.remove(f"{self.folder}/{old}")
        return relative

    def latest(self) -> State | None:
        found = self._names()
        if not found:
            return None
        with self.store.reading(f"{self.folder}/{found[-1]}") as path:
            return read_checkpoint(path)

    def _names(self) -> list[str]:
        return [name for name in self.store.listdir(self.folder) if self._NAME.fullmatch(name)]


class DirectoryContext(InMemoryContext):
    """Like InMemoryContext, but checkpoints are files in a `CheckpointFolder`, so a second process
    can resume what a killed one started."""

    def __init__(
        self, folder: Path, stop_when: Callable[[InMemoryContext], bool] | None = None, keep: int = 2
    ) -> None:
        super().__init__(stop_when)
        self.checkpoints = CheckpointFolder(LocalArtifactStore(Path(folder)), ".", keep)

    def save_checkpoint(self, state: State) -> None:
        self.checkpoints.save(state, int(state.get("epoch", self.checkpoints_saved)))
        self.checkpoints_saved += 1

    def latest_checkpoint(self) -> State | None:
        return self.checkpoints.latest()
