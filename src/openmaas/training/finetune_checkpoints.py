"""A fine-tuning job's checkpoints as models of their own: after every epoch the job writes the
adapter's weights of that moment in peft's layout (`jobs/<job>/adapters/step-<N>/`), beside the
resumable checkpoint (adapter and optimizer state, `jobs/<job>/checkpoints/`), so that the
checkpoint's id `ft:<base>:<org>:<suffix>:<job>:ckpt-step-<N>` is served like the final adapter
(serving/adapters.py) without reading optimizer state. The folders go with the job's artifacts: a
checkpoint whose folder is gone is no model (404).
"""

from __future__ import annotations

import re
from typing import Any

from openmaas.jobs.run import JobRun
from openmaas.storage import ArtifactStore
from openmaas.training.checkpoint import State
from openmaas.training.job_context import JobTrainingContext
from openmaas.training.lora import LoraSpec

_CHECKPOINT = re.compile(r"(?P<adapter>ft:.+):ckpt-step-(?P<step>\d{1,9})")


def checkpoint_model(fine_tuned_model: str, step: int) -> str:
    """The model id of a job's checkpoint at `step`."""
    return f"{fine_tuned_model}:ckpt-step-{step}"


def parse_checkpoint_model(name: str) -> tuple[str, int] | None:
    """(the adapter's `ft:` id, step) of a checkpoint's model id, or None for any other name."""
    match = _CHECKPOINT.fullmatch(name)
    return None if match is None else (match["adapter"], int(match["step"]))


def checkpoint_adapter_path(store: ArtifactStore, job_id: str, step: int) -> str:
    """Where a job's checkpoint at `step` keeps its adapter (a peft folder) in the store."""
    return f"{store.job_dir(job_id)}/adapters/step-{step}"


class AdapterCheckpointContext(JobTrainingContext):
    """A fine-tuning job's training context: each checkpoint also publishes its adapter's peft
    folder, before the checkpoint (and its `checkpoints.list` entry) is written, so a listed
    checkpoint always has its weights."""

    def __init__(self, run: JobRun[Any], total_epochs: int, spec: LoraSpec, base_model: str) -> None:
        super().__init__(run, total_epochs)
        self._spec = spec
        self._base_model = base_model

    def save_checkpoint(self, state: State) -> None:
        from openmaas.training.lora import save_adapter_state

        store = self._run.store
        relative = checkpoint_adapter_path(store, self._run.job_id, int(state["step"]))
        store.remove(relative)  # a resumed attempt redoing this epoch writes the same weights again
        with store.staged(relative) as folder:
            save_adapter_state(state["adapter"], self._spec, folder, base_model=self._base_model)
        super().save_checkpoint(state)
