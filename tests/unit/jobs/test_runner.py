"""One attempt in this process, against a `{kind: handler}` map: the handler gets its typed
parameters and settles the job; a stop, an input error and a crash each end the attempt as the
worker expects; a kind or parameters no handler takes fail the job without retrying."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from openmaas import errors
from openmaas.bootstrap import Platform
from openmaas.jobs import queue
from openmaas.jobs.handlers import JobHandler, JobHandlers, preload_modules
from openmaas.jobs.run import JobRun, JobStopped
from openmaas.jobs.runner import execute
from openmaas.jobs.tables import Job, JobStatus
from openmaas.tenancy.tables import Organization
from tests.support.clock import FakeClock
from tests.support.platforms import make_platform


class Greeting(BaseModel):
    name: str
    times: int = 1


def greet(run: JobRun[Greeting]) -> None:
    with run.db.session() as session:
        run.succeed(session, {"said": ", ".join([f"hello {run.params.name}"] * run.params.times)})


def stop(run: JobRun[Greeting]) -> None:
    raise JobStopped(run.job_id)


def refuse(run: JobRun[Greeting]) -> None:
    raise errors.ValidationFailed(f"{run.params.name} is not welcome", param="name")


def crash(run: JobRun[Greeting]) -> None:
    raise RuntimeError("boom")


HANDLERS: JobHandlers = {
    "greet": JobHandler("greet", Greeting, greet, preload=("json", "email")),
    "stop": JobHandler("stop", Greeting, stop, preload=("json",)),
    "refuse": JobHandler("refuse", Greeting, refuse),
    "crash": JobHandler("crash", Greeting, crash),
}


@pytest.fixture
def plat(tmp_path: Path, database_url: str) -> Iterator[Platform]:
    platform = make_platform(tmp_path / "home", database_url, clock=FakeClock())
    with platform.db.session() as session:
        session.add(Organization(id="org_a", name="a", plan="default", created_at=platform.clock.now()))
    yield platform
    platform.close()


def _attempt(plat: Platform, kind: str, params: BaseModel) -> tuple[int, Job]:
    """Enqueue a job of `kind`, claim it and run the attempt; the exit status and the job after."""
    with plat.db.session() as session:
        queue.enqueue(session, org_id="org_a", kind=kind, params=params, now=plat.clock.now(), max_attempts=2)
    with plat.db.session() as session:
        claim = queue.claim_next(
            session, owner="w", now=plat.clock.now(), lease=timedelta(seconds=30), org_limit=5
        )
    assert claim is not None
    code = execute(
        HANDLERS, db=plat.db, store=plat.store, clock=plat.clock, claim=claim, stop_requested=lambda: False
    )
    with plat.db.read_session() as session:
        job = session.get(Job, claim.job_id)
        assert job is not None
        session.expunge(job)
    return code, job


def test_a_handler_gets_its_typed_parameters_and_settles_the_job(plat: Platform) -> None:
    code, job = _attempt(plat, "greet", Greeting(name="ada", times=2))
    assert code == 0
    assert job.params == {"name": "ada", "times": 2}  # stored as JSON, read back into Greeting
    assert job.status == JobStatus.SUCCEEDED and job.result == {"said": "hello ada, hello ada"}


def test_a_stopped_attempt_exits_stopped_and_leaves_the_job_to_its_worker(plat: Platform) -> None:
    code, job = _attempt(plat, "stop", Greeting(name="ada"))
    assert code == queue.EXIT_STOPPED and job.status == JobStatus.RUNNING


def test_an_input_error_fails_the_job_and_a_crash_is_kept_for_a_retry(plat: Platform) -> None:
    code, job = _attempt(plat, "refuse", Greeting(name="eve"))
    assert code == 0 and job.status == JobStatus.FAILED
    assert job.error is not None and job.error["param"] == "name"
    code, job = _attempt(plat, "crash", Greeting(name="ada"))
    assert code == 1 and job.status == JobStatus.RUNNING
    assert job.error is not None and job.error["message"] == "RuntimeError: boom"


class Other(BaseModel):
    other: str


def test_a_kind_or_parameters_no_handler_takes_fail_the_job(plat: Platform) -> None:
    code, job = _attempt(plat, "unknown", Greeting(name="ada"))
    assert code == 0 and job.status == JobStatus.FAILED
    assert job.error is not None and job.error["param"] == "kind"
    code, job = _attempt(plat, "greet", Other(other="x"))
    assert code == 0 and job.status == JobStatus.FAILED
    assert job.error is not None and job.error["param"] == "params"


def test_the_forkserver_preloads_what_the_handlers_ask_each_once() -> None:
    assert preload_modules(HANDLERS) == ["json", "email"]
