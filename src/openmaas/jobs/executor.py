"""Executors start one attempt of a job somewhere and let the worker watch and stop it.

`LocalExecutor` runs each attempt in its own Python subprocess (`python -m openmaas.jobs.runner`),
so a crash or an out-of-memory kill in training never takes the worker or the server down. A Ray
executor will implement the same protocol by submitting Ray jobs.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Protocol

from pydantic import BaseModel

from openmaas.jobs.queue import Claim


class RunSpec(BaseModel):
    """Everything a job subprocess needs, sent on its stdin (never on argv: URLs carry passwords)."""

    claim: Claim
    database_url: str
    artifacts_path: str


class Execution(Protocol):
    def poll(self) -> int | None:
        """The exit status once it ended, else None."""
        ...

    def stop(self) -> None:
        """Ask it to stop soon (it saves nothing more and exits)."""
        ...

    def kill(self) -> None:
        """Stop it now."""
        ...


class Executor(Protocol):
    def start(self, spec: RunSpec) -> Execution: ...


def _die_with_parent() -> None:
    # Linux: the kernel kills the subprocess if the worker dies (SIGKILL included), so an orphan
    # never keeps training a job that another worker has taken over.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class LocalProcess:
    def __init__(self, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        self._process = process
        self._log = log

    def poll(self) -> int | None:
        code = self._process.poll()
        if code is not None and not self._log.closed:
            self._log.close()
        return code

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()


class LocalExecutor:
    """One subprocess per attempt; its output goes to `jobs/<id>/attempt-<n>.log` in the store."""

    def __init__(self, artifacts_path: Path) -> None:
        self.artifacts_path = Path(artifacts_path)

    def start(self, spec: RunSpec) -> LocalProcess:
        log_path = self.artifacts_path / "jobs" / spec.claim.job_id / f"attempt-{spec.claim.attempt}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed by LocalProcess when the process ends
        process = subprocess.Popen(
            [sys.executable, "-m", "openmaas.jobs.runner"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        assert process.stdin is not None
        process.stdin.write(spec.model_dump_json().encode())
        process.stdin.close()
        return LocalProcess(process, log)
