"""SDK resource for OpenAI's fine-tuning jobs: `client.fine_tuning.create(model="qwen",
training_file="file-…", suffix="support", hyperparameters={"n_epochs": 3})`, then `wait`,
`events`, `checkpoints`, `cancel`, `pause`, `resume`."""

from __future__ import annotations

import time
from typing import Any

from openmaas.schemas.fine_tuning import (
    FineTuningCheckpointPublic,
    FineTuningEventPublic,
    FineTuningJobPublic,
)
from openmaas.schemas.pages import Page
from openmaas.sdk.calls import Call, Plan, Sleep, creating
from openmaas.sdk.resource import Resource, S, endpoint

FINISHED = frozenset({"succeeded", "failed", "cancelled"})
_PATH = "/v1/fine_tuning/jobs"


def _get(job_id: str) -> Call[FineTuningJobPublic]:
    return Call("GET", f"{_PATH}/{job_id}", FineTuningJobPublic)


class FineTuning(Resource[S]):
    @endpoint
    def create(
        self,
        *,
        model: str,
        training_file: str,
        validation_file: str | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        hyperparameters: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Call[FineTuningJobPublic]:
        """A supervised LoRA job; `hyperparameters`: n_epochs, batch_size, learning_rate_multiplier
        (each may be "auto"), lora_rank, lora_alpha, lora_dropout, lora_target_modules."""
        body: dict[str, Any] = {"model": model, "training_file": training_file}
        body |= {"validation_file": validation_file, "suffix": suffix, "seed": seed}
        body = {k: v for k, v in body.items() if v is not None}
        if hyperparameters:
            body["method"] = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
        return creating(_PATH, FineTuningJobPublic, body, idempotency_key)

    @endpoint
    def list(self, *, limit: int | None = None, after: str | None = None) -> Call[Page[FineTuningJobPublic]]:
        return Call("GET", _PATH, Page[FineTuningJobPublic], params={"limit": limit, "after": after})

    @endpoint
    def get(self, job_id: str) -> Call[FineTuningJobPublic]:
        return _get(job_id)

    @endpoint
    def events(
        self, job_id: str, *, limit: int | None = None, after: str | None = None
    ) -> Call[Page[FineTuningEventPublic]]:
        """Newest first."""
        params = {"limit": limit, "after": after}
        return Call("GET", f"{_PATH}/{job_id}/events", Page[FineTuningEventPublic], params=params)

    @endpoint
    def checkpoints(self, job_id: str) -> Call[Page[FineTuningCheckpointPublic]]:
        return Call("GET", f"{_PATH}/{job_id}/checkpoints", Page[FineTuningCheckpointPublic])

    @endpoint
    def cancel(self, job_id: str) -> Call[FineTuningJobPublic]:
        return Call("POST", f"{_PATH}/{job_id}/cancel", FineTuningJobPublic)

    @endpoint
    def pause(self, job_id: str) -> Call[FineTuningJobPublic]:
        return Call("POST", f"{_PATH}/{job_id}/pause", FineTuningJobPublic)

    @endpoint
    def resume(self, job_id: str) -> Call[FineTuningJobPublic]:
        return Call("POST", f"{_PATH}/{job_id}/resume", FineTuningJobPublic)

    @endpoint
    def wait(self, job_id: str, timeout: float = 3600.0, interval: float = 1.0) -> Plan[FineTuningJobPublic]:
        """Poll until the job ended (succeeded, failed or cancelled)."""
        deadline = time.monotonic() + timeout
        while (job := (yield from _get(job_id))).status not in FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fine-tuning job {job_id} still {job.status} after {timeout}s")
            yield Sleep(interval)
        return job
