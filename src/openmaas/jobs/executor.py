"""Executors start one attempt of a job somewhere and let the worker watch and stop it.

`LocalExecutor` runs each attempt in its own process, so a crash or an out-of-memory kill in
training never takes the worker or the server down. The processes are forked from a
multiprocessing *forkserver* that has imported torch and the trainers once: an attempt starts in
milliseconds instead of re-importing several seconds of libraries. What a job process runs, its
entry point, comes from the composition root (`openmaas.job_process`). `RayExecutor`
(ray_executor.py, imported only when `OPENMAAS_EXECUTOR=ray`) implements the same protocol with one
Ray actor per attempt.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from openmaas.jobs.queue import Claim
from openmaas.storage import ArtifactStore, LocalArtifactStore


class RunSpec(BaseModel):
    """Everything a job process needs (never on a command line: database URLs carry passwords)."""

    claim: Claim
    database_url: str
    storage_url: str  # the artifact store, as `openmaas.storage.open_store` takes it
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


@dataclass(frozen=True, slots=True)
class Resources:
    """What one attempt occupies while it runs, all its workers together: what its compute is
    billed for (per second, by resource class)."""

    cpus: float = 1.0
    gpus: float = 0.0

    @classmethod
    def requested(cls, params: dict[str, Any]) -> Resources:
        """What a job's parameters ask for: `workers` × (`cpus_per_worker`, `gpus_per_worker`), or
        `cpus`/`gpus`; one CPU when they name nothing."""
        workers = max(1, int(_number(params.get("workers")) or 1))
        cpus = _number(params.get("cpus_per_worker")) or _number(params.get("cpus")) or 1.0
        gpus = _number(params.get("gpus_per_worker")) or _number(params.get("gpus")) or 0.0
        return cls(cpus=workers * cpus, gpus=workers * gpus)

    def billed(self) -> tuple[str, float]:
        """The resource class an attempt is billed in and how many of its units run: its GPUs
        when it has any (their price covers the CPUs beside them), else its CPUs."""
        return ("gpu", self.gpus) if self.gpus > 0 else ("cpu", self.cpus)


def _number(value: Any) -> float | None:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None
    )


@runtime_checkable
class ReportsResources(Protocol):
    """An `Execution` that knows what it occupies (a Ray attempt: its workers × their resources).
    Optional: the worker bills any other execution for what its job's parameters request
    (`Resources.requested`)."""

    def resources(self) -> Resources: ...


@runtime_checkable
class ExplainsExit(Protocol):
    """An `Execution` that can say why it ended without finishing its job (a Ray attempt whose
    node was lost). Optional: otherwise the job's events give the exit status."""

    def exit_reason(self) -> str | None: ...


@runtime_checkable
class ReportsReach(Protocol):
    """An `Execution` that can be out of reach without being known to have ended (a Ray attempt
    whose node stopped answering and is not yet declared dead). Optional: any other runs until
    `poll` says it ended. The worker bills an execution out of reach nothing further until it is
    reached again (it ran: the intervals that passed are billed then) or ends (its last interval
    ends when it was last reached)."""

    def reachable(self) -> bool: ...


class Executor(Protocol):
    def warm(self) -> None:
        """Get ready to start jobs quickly (called once, before the worker claims any)."""
        ...

    def start(self, spec: RunSpec) -> Execution: ...


class LocalProcess:
    def __init__(self, process: BaseProcess, log: contextlib.ExitStack) -> None:
        self._process = process
        self._log = log  # publishes the attempt's log (a store not on this filesystem) once it ends

    def poll(self) -> int | None:
        code = self._process.exitcode
        if code is not None:
            self._log.close()
        return code

    def stop(self) -> None:
        if self._process.exitcode is None and self._process.pid is not None:
            os.kill(self._process.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self._process.exitcode is None:
            self._process.kill()


# Runs one attempt in the process it is called in; returns the exit status. A module-level
# function: LocalExecutor hands it to the forkserver by reference (pickled by name).
JobEntry = Callable[[RunSpec], int]


class LocalExecutor:
    """One process per attempt; its output goes to `jobs/<id>/attempt-<n>.log` in the store: as it
    is written in a folder store, when the attempt ends in another (S3)."""

    def __init__(self, store: ArtifactStore, entry: JobEntry, preload: Sequence[str] = ()) -> None:
        self._store = store
        self._entry = entry
        self._context = multiprocessing.get_context("forkserver")
        # Imported once by the forkserver, so every job process starts with them loaded.
        self._context.set_forkserver_preload(list(dict.fromkeys([entry.__module__, *preload])))

    def warm(self) -> None:
        """Start the forkserver and let it import the preloads now, not while leases are held."""
        process = self._context.Process(target=_ready, name="openmaas-warmup")
        # The forkserver inherits this thread's signal mask. It ignores SIGINT once its preloads are
        # imported, but a Ctrl-C in the terminal reaches the whole process group during those
        # seconds of imports: blocked, it cannot kill the forkserver half-way (a traceback there and
        # an EOFError here). Its job processes stop on SIGTERM from the worker, not on Ctrl-C.
        # The resource tracker starts first: starting it unblocks SIGINT in the calling thread.
        resource_tracker.ensure_running()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        process.join()

    def start(self, spec: RunSpec) -> LocalProcess:
        claim = spec.claim
        relative = f"{self._store.job_dir(claim.job_id)}/attempt-{claim.attempt}.log"
        log = contextlib.ExitStack()
        if isinstance(self._store, LocalArtifactStore):
            log_path = self._store.path(relative)
            log_path.parent.mkdir(parents=True, exist_ok=True)
        else:
            log_path = log.enter_context(self._store.staged(relative))
        process = self._context.Process(
            target=_run_in_child,
            args=(self._entry, spec.model_dump_json(), str(log_path)),
            name=f"openmaas-job-{claim.job_id}",
        )
        try:
            process.start()
        except BaseException:
            log.close()
            raise
        return LocalProcess(process, log)


def _ready() -> None:
    """The warm-up process: nothing to do once forked."""


def _run_in_child(entry: JobEntry, spec_json: str, log_path: str) -> None:
    """The target of a forked job process: log to the attempt's file, run the entry, exit."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _die_with_forkserver()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    sys.exit(entry(RunSpec.model_validate_json(spec_json)))


def _die_with_forkserver() -> None:
    """Be killed when the forkserver exits, and let it exit when its worker dies.

    A forked job holds the forkserver's "alive" pipe, which would keep the forkserver (and so the
    job) running after a SIGKILL of the worker; closing it here lets the forkserver see its worker
    go, and PR_SET_PDEATHSIG makes the kernel kill this process when the forkserver ends.
    """
    from multiprocessing import forkserver

    with contextlib.suppress(OSError, AttributeError, TypeError):
        os.close(forkserver._forkserver._forkserver_alive_fd)  # type: ignore[attr-defined]
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
