"""Jobs' compute, metered by the worker per interval: each interval billed once under its own id,
the last up to when the process was last seen running; a worker that dies bills nothing twice when
another takes the job over; a budget that cannot hold the next interval pauses the job (or keeps a
claimed one from starting); the month's invoice shows the compute line."""

from __future__ import annotations

import time

from pydantic import BaseModel
from sqlalchemy import select

from openmaas.billing import invoices, usage_report
from openmaas.billing.usage_report import UsageFilter
from openmaas.bootstrap import Platform
from openmaas.jobs import queue
from openmaas.jobs.tables import Job, JobEvent
from openmaas.jobs.worker import Worker, WorkerLimits
from openmaas.metering.tables import BillingAccount, UsageRecord
from openmaas.training.jobs import TRAIN_KIND
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_account, make_org, make_pricebook
from tests.support.served import Served
from tests.unit.jobs.test_worker import FakeExecutor, ReachableExecution

INTERVAL_S = 60.0


class Training(BaseModel):
    """A job's resource requests, as a training job's parameters carry them."""

    workers: int = 1
    gpus_per_worker: int = 0


def _worker(platform: Platform, executor: FakeExecutor) -> Worker:
    limits = WorkerLimits(
        concurrency=2, org_concurrency=5, lease_s=30, heartbeat_s=0.0, poll_s=0.1, meter_s=INTERVAL_S
    )
    return Worker(
        platform.db,
        platform.clock,
        platform.settings,
        executor=executor,
        limits=limits,
        meter=platform.job_compute,
    )


def _enqueue(platform: Platform, org: str, params: BaseModel | None = None, kind: str = TRAIN_KIND) -> str:
    with platform.db.session() as session:
        job = queue.enqueue(
            session,
            org_id=org,
            kind=kind,
            params=params or Training(),
            now=platform.clock.now(),
            max_attempts=3,
        )
        return job.id


def _billed(platform: Platform, job_id: str, count: int) -> list[tuple[str, int, str | None]]:
    """The job's compute events (id, milliseconds, resource class) once `count` are written."""
    deadline = time.monotonic() + 10
    while True:
        with platform.db.read_session() as session:
            rows = session.scalars(
                select(UsageRecord)
                .where(UsageRecord.event_id.like(f"{job_id}:compute:%"))
                .order_by(UsageRecord.seq)
            ).all()
            found = [(r.event_id, r.qty_compute_ms or 0, r.resource_class) for r in rows]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def _job(platform: Platform, job_id: str) -> Job:
    with platform.db.read_session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_each_interval_is_billed_once_and_the_last_up_to_when_it_ran(clocked: Clocked) -> None:
    platform, clock = clocked.platform, clocked.clock
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "compute_ms", "price": "0.001", "resource_class": "cpu"}])
    executor = FakeExecutor()
    worker = _worker(platform, executor)
    job_id = _enqueue(platform, org)
    worker.tick()  # claims it and holds its first interval
    for _ in range(5):  # 150 s of ticks: intervals 0 and 1 pass, and half of the third
        clock.advance(30)
        worker.tick()
    (execution,) = executor.started
    with platform.db.session() as session:
        queue.finish(session, execution.spec.claim, queue.JobStatus.SUCCEEDED, now=clock.now())
    clock.advance(0.5)
    execution.code = 0  # it ended within the poll after it was last seen at 150 s
    worker.tick()
    worker.tick()
    run = f"1.{worker.id[-8:]}"
    assert _billed(platform, job_id, 3) == [
        (f"{job_id}:compute:{run}:0", 60_000, "cpu"),
        (f"{job_id}:compute:{run}:1", 60_000, "cpu"),
        (f"{job_id}:compute:{run}:2", 30_000, "cpu"),  # up to the last tick that saw it running
    ]
    period = f"{clock.now():%Y-%m}"
    with platform.db.read_session() as session:
        statement = invoices.statement(session, org, period, now=clock.now(), currency="USD")
    usage = [
        (ln.unit, ln.resource_class, ln.quantity, ln.amount) for ln in statement.lines if ln.kind == "usage"
    ]
    assert usage == [("compute_ms", "cpu", 150_000, "0.15")]
    with platform.db.read_session() as session:
        report = usage_report.usage(session, org, UsageFilter(), group_by=["resource_class"], currency="USD")
    assert [(b.resource_class, b.unit, b.quantity, b.cost) for b in report.data] == [
        ("cpu", "compute_ms", 150_000, "0.15")
    ]


def test_a_worker_that_dies_or_hands_back_never_bills_an_interval_twice(clocked: Clocked) -> None:
    platform, clock = clocked.platform, clocked.clock
    org = make_org(platform, "acme")
    first = _worker(platform, FakeExecutor())
    job_id = _enqueue(platform, org, Training(workers=2, gpus_per_worker=1))
    first.tick()
    clock.advance(60)
    first.tick()  # interval 0 billed: 2 GPUs × 60 s
    clock.advance(45)  # then the worker dies (no more ticks): these 45 s are never billed
    clock.advance(31)  # its lease expires
    executor = FakeExecutor()
    second = _worker(platform, executor)
    second.tick()  # sweeps the job back to the queue and claims it: attempt 2
    clock.advance(60)
    second.tick()
    # A worker shutting down hands the job back keeping its attempt number; a third worker runs
    # that same attempt again, under its own ids.
    (execution,) = executor.started

    def stop_and_exit() -> None:
        execution.code = queue.EXIT_STOPPED

    execution.stop = stop_and_exit  # type: ignore[method-assign]
    clock.advance(10)
    second.tick()  # seen running at 70 s of its attempt
    second.shutdown(grace_s=1)
    third = _worker(platform, FakeExecutor())
    third.tick()
    clock.advance(60)
    third.tick()
    assert _job(platform, job_id).attempts == 2
    billed = _billed(platform, job_id, 4)
    ids = [event_id for event_id, _, _ in billed]
    assert len(ids) == len(set(ids)) == 4
    assert [(ms, rc) for _, ms, rc in billed] == [
        (120_000, "gpu"),  # the first worker: attempt 1, interval 0 (2 GPUs × 60 s)
        (120_000, "gpu"),  # the second: attempt 2, interval 0
        (20_000, "gpu"),  # its last 10 s, up to the tick before it handed the job back
        (120_000, "gpu"),  # the third: attempt 2 again, interval 0
    ]
    runs = [event_id.split(":")[2] for event_id in ids]
    assert len(set(runs)) == 3 and runs[1].split(".")[0] == runs[3].split(".")[0] == "2"


def test_an_attempt_out_of_reach_is_billed_for_when_it_was_reached(clocked: Clocked) -> None:
    """Out of reach (a Ray attempt whose node stopped answering): nothing more is billed until it
    answers again, which bills the intervals that passed (it ran); ending out of reach, its last
    interval ends when it was last reached (a node that died is not billed until declared dead)."""
    platform, clock = clocked.platform, clocked.clock
    org = make_org(platform, "acme")
    executor = FakeExecutor(ReachableExecution)
    worker = _worker(platform, executor)
    job_id = _enqueue(platform, org)
    worker.tick()
    (execution,) = executor.started
    assert isinstance(execution, ReachableExecution)
    run = f"1.{worker.id[-8:]}"
    clock.advance(30)
    worker.tick()
    execution.reach = False
    for _ in range(2):  # 110 s: interval 0 has passed, not billed while out of reach
        clock.advance(40)
        worker.tick()
    assert _billed(platform, job_id, 0) == []
    execution.reach = True
    clock.advance(10)
    worker.tick()  # reached at 120 s: it ran, intervals 0 and 1 are billed
    clock.advance(15)
    worker.tick()  # last reached at 135 s
    execution.reach = False
    for _ in range(2):
        clock.advance(15)
        worker.tick()
    execution.code = 1  # at 165 s: its node was declared dead
    worker.tick()
    billed = [(event_id, ms) for event_id, ms, _ in _billed(platform, job_id, 3) if f":{run}:" in event_id]
    assert billed == [
        (f"{job_id}:compute:{run}:0", 60_000),
        (f"{job_id}:compute:{run}:1", 60_000),
        (f"{job_id}:compute:{run}:2", 15_000),  # up to 135 s, when it was last reached
    ]


def test_a_job_pauses_when_the_budget_cannot_hold_its_next_interval(clocked: Clocked) -> None:
    platform, clock = clocked.platform, clocked.clock
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "compute_ms", "price": "0.01", "resource_class": "gpu"}])
    make_account(platform, org, prepaid_micros=2_000_000)  # 2.00: one interval of 2 GPUs is 1.20
    executor = FakeExecutor()
    worker = _worker(platform, executor)
    job_id = _enqueue(platform, org, Training(workers=2, gpus_per_worker=1))
    worker.tick()
    (execution,) = executor.started

    def stop_and_exit() -> None:
        execution.stopped = True
        execution.code = queue.EXIT_STOPPED

    execution.stop = stop_and_exit  # type: ignore[method-assign]
    clock.advance(60)
    worker.tick()  # interval 0 billed (1.20); interval 1 (1.20) does not fit in the 0.80 left
    assert execution.stopped
    worker.tick()
    job = _job(platform, job_id)
    assert (job.status, job.attempts) == ("paused", 0)
    with platform.db.read_session() as session:
        said = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "billing")
        ).all()
    assert [e.data for e in said] == [{"reason": "insufficient_quota"}]
    assert "no budget left" in said[0].message
    assert [ms for _, ms, _ in _billed(platform, job_id, 1)] == [120_000]

    # With the credit spent, a job claimed next is paused before it starts.
    with platform.db.session() as session:
        account = session.get(BillingAccount, org)
        assert account is not None
        account.balance_micros = 0
    platform.metering.budgets.forget(org)
    second = _enqueue(platform, org, Training(workers=2, gpus_per_worker=1))
    worker.tick()
    assert len(executor.started) == 1
    assert (_job(platform, second).status, _job(platform, second).attempts) == ("paused", 0)


def test_creating_a_job_with_no_budget_left_is_refused(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    tenant = served.tenant("acme")
    make_pricebook(clocked.platform, [{"unit": "compute_ms", "price": "0.001", "resource_class": "cpu"}])
    make_account(clocked.platform, tenant.org_id, prepaid_micros=0)
    training = {"task": "tabular-classification", "dataset": "none", "target": "label"}
    with served.client(tenant.key) as api:
        refused = api.post("/v1/training_jobs", json=training)
        assert refused.status_code == 402, refused.text
        assert refused.json()["error"]["code"] == "insufficient_quota"
        with clocked.platform.db.session() as session:
            account = session.get(BillingAccount, tenant.org_id)
            assert account is not None
            account.balance_micros = 1_000_000  # credit added: the job is created (its dataset is next)
        clocked.platform.metering.budgets.forget(tenant.org_id)
        assert api.post("/v1/training_jobs", json=training).status_code == 404
        with clocked.platform.db.read_session() as session:
            account = session.get(BillingAccount, tenant.org_id)
            assert account is not None and account.unbilled_micros == 0  # the check billed nothing


def test_the_platforms_own_jobs_on_a_tenants_data_are_not_billed_as_compute(clocked: Clocked) -> None:
    """Validating an upload is priced by ingest, not by the seconds it takes."""
    platform, clock = clocked.platform, clocked.clock
    org = make_org(platform, "acme")
    executor = FakeExecutor()
    worker = _worker(platform, executor)
    validation = _enqueue(platform, org, kind="validate_dataset")
    training = _enqueue(platform, org)
    worker.tick()
    clock.advance(61)
    worker.tick()
    assert len(_billed(platform, training, 1)) == 1
    assert _billed(platform, validation, 0) == []
