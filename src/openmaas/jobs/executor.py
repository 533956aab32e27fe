"""Executors start one attempt of a job somewhere and let the worker watch and stop it.

`LocalExecutor` runs each attempt in its own process, so a crash or an out-of-memory kill in
training never takes the worker or the server down. The processes are forked from a
multiprocessing *forkserver* that has imported torch and the trainers once: an attempt starts in
milliseconds instead of re-importing several seconds of libraries. A Ray executor will implement
the same protocol by submitting Ray jobs.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from openmaas.jobs.queue import Claim

# Imported once by the forkserver, so every job process starts with them loaded.
PRELOAD = (
    "openmaas.jobs.runner",
    "openmaas.datasets.jobs",
    "openmaas.training.jobs",
    "openmaas.registry.artifact",
    "openmaas.training.train",
    # Building an AdamW imports torch._dynamo (seconds): once in the forkserver, not in every job.
    "torch._dynamo",
)


class RunSpec(BaseModel):
    """Everything a job process needs (never on a command line: database URLs carry passwords)."""

    claim: Claim
    database_url: str
    artifacts_path: str
    worker_pid: int  # the job stops when this process is gone (its worker was killed)


class Execution(Protocol):
    def poll(self) -> int | None:
        """The exit status once it ended (negative: killed by that signal), else None."""
        ...

    def stop(self) -> None:
        """Ask it to stop soon (SIGTERM: it stops at the next batch and exits)."""
        ...

    def kill(self) -> None:
        """Stop it now."""
        ...


class Executor(Protocol):
    def warm(self) -> None:
        """Get ready to start jobs quickly (called once, before the worker claims any)."""
        ...

    def start(self, spec: RunSpec) -> Execution: ...


class LocalProcess:
    def __init__(self, process: BaseProcess) -> None:
        self._process = process

    def poll(self) -> int | None:
        return self._process.exitcode

    def stop(self) -> None:
        if self._process.exitcode is None and self._process.pid is not None:
            os.kill(self._process.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self._process.exitcode is None:
            self._process.kill()


class LocalExecutor:
    """One process per attempt; its output goes to `jobs/<id>/attempt-<n>.log` in the store."""

    def __init__(self, artifacts_path: Path) -> None:
        self.artifacts_path = Path(artifacts_path)
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(PRELOAD))

    def warm(self) -> None:
        """Start the forkserver and let it import the preloads now, not while leases are held."""
        process = self._context.Process(target=_ready, name="openmaas-warmup")
        process.start()
        process.join()

    def start(self, spec: RunSpec) -> LocalProcess:
        from openmaas.jobs.runner import run_in_child

        log_path = self.artifacts_path / "jobs" / spec.claim.job_id / f"attempt-{spec.claim.attempt}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        process = self._context.Process(
            target=run_in_child,
            args=(spec.model_dump_json(), str(log_path)),
            name=f"openmaas-job-{spec.claim.job_id}",
        )
        process.start()
        return LocalProcess(process)


def _ready() -> None:
    """The warm-up process: nothing to do once forked."""
