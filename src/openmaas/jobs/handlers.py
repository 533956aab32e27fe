"""What the job system is given for each kind of job: the model of its parameters and the function
that runs it. The composition root builds the `{kind: handler}` map (`bootstrap.job_handlers`);
the job system names no kind of job and imports no service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic

from openmaas.jobs.run import JobRun, P


@dataclass(frozen=True)
class JobHandler(Generic[P]):
    kind: str
    # The job's parameters: validated when the job is created, stored as JSON in `jobs.params`,
    # read back into this model in the job process.
    params: type[P]
    run: Callable[[JobRun[P]], None]
    # Modules the local executor's forkserver imports once, so that job processes start with
    # them loaded (torch and the trainers take seconds to import).
    preload: tuple[str, ...] = ()


JobHandlers = Mapping[str, JobHandler[Any]]


def preload_modules(handlers: JobHandlers) -> list[str]:
    """What the handlers ask the forkserver to import, each module once, in order."""
    return list(dict.fromkeys(module for handler in handlers.values() for module in handler.preload))
