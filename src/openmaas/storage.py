"""The artifact store: a local folder (under `OPENMAAS_HOME` by default) holding dataset files,
job checkpoints and model artifacts. The database keeps paths relative to its root, so the folder
can move, and in cluster mode it is a shared filesystem every worker mounts.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openmaas.training.checkpoint import State

_CHECKPOINT = re.compile(r"checkpoint-(\d+)\.safetensors")


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, relative: str) -> Path:
        """The absolute path of a stored relative path; refuses anything outside the root."""
        resolved = (self.root / relative).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ValueError(f"{relative!r} is outside the artifact store")
        return resolved

    def dataset_dir(self, org_id: str, dataset_id: str) -> str:
        return f"datasets/{org_id}/{dataset_id}"

    def model_dir(self, org_id: str, version_id: str) -> str:
        return f"models/{org_id}/{version_id}"

    def job_dir(self, job_id: str) -> str:
        return f"jobs/{job_id}"

    def remove(self, relative: str) -> None:
        shutil.rmtree(self.path(relative), ignore_errors=True)

    def save_checkpoint(self, job_id: str, step: int, state: State) -> Path:
        """Write checkpoint `step` of a job atomically (safetensors with a JSON skeleton, no pickle)."""
        from openmaas.training.checkpoint import write_checkpoint  # torch: only where checkpoints are

        path = self.path(f"{self.job_dir(job_id)}/checkpoints/checkpoint-{step:06d}.safetensors")
        write_checkpoint(state, path)
        return path

    def latest_checkpoint(self, job_id: str) -> State | None:
        from openmaas.training.checkpoint import read_checkpoint

        folder = self.path(f"{self.job_dir(job_id)}/checkpoints")
        if not folder.is_dir():
            return None
        found = sorted(p for p in folder.iterdir() if _CHECKPOINT.fullmatch(p.name))
        return read_checkpoint(found[-1]) if found else None
