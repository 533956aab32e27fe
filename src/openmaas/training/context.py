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
    """Checkpoints as files `checkpoint-<epoch>.safetensors` in one folder, each written atomically;
    the latest is what a resumed run starts from. `keep`: how many to keep (None: all)."""

    _NAME = re.compile(r"checkpoint-(\d+)\.safetensors")

    def __init__(self, folder: Path, keep: int | None = None) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def save(self, state: State, step: int) -> Path:
        path = self.folder / f"checkpoint-{step:06d}.safetensors"
        write_checkpoint_file(state, path)
        if self.keep is not None:
            for old in self._files()[: -self.keep]:
                old.unlink(missing_ok=True)
        return path

    def latest(self) -> State | None:
        found = self._files()
        return read_checkpoint(found[-1]) if found else None

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if self._NAME.fullmatch(p.name))


class DirectoryContext(InMemoryContext):
    """Like InMemoryContext, but checkpoints are files in a `CheckpointFolder`, so a second process
    can resume what a killed one started."""

    def __init__(
        self, folder: Path, stop_when: Callable[[InMemoryContext], bool] | None = None, keep: int = 2
    ) -> None:
        super().__init__(stop_when)
        self.checkpoints = CheckpointFolder(folder, keep)

    def save_checkpoint(self, state: State) -> None:
        self.checkpoints.save(state, int(state.get("epoch", self.checkpoints_saved)))
        self.checkpoints_saved += 1

    def latest_checkpoint(self) -> State | None:
        return self.checkpoints.latest()
