"""Compute, ingest and storage usage: priced by resource class, per GB and per GB-month (of the
month's real length), idempotent per interval or day; a training job stops when credit runs out."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from openmaas import errors
from openmaas.billing import invoices
from openmaas.metering import sources
from openmaas.metering.ledger import record_in
from openmaas.metering.settlement import Sql
from openmaas.metering.tables import BillingAccount, UsageRecord
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_account, make_org, make_pricebook


def test_storage_sampled_daily_adds_up_to_gb_months_in_a_leap_february(clocked: Clocked) -> None:
    platform = clocked.platform
    clocked.move_to(datetime(2028, 1, 20, tzinfo=UTC))
    org = make_org(platform, "acme", timezone="Pacific/Kiritimati")
    make_pricebook(
        platform,
        [
            {"unit": "storage_gb_month_micros", "price": "0.10"},
            {"unit": "bytes_ingested", "price": "0.05"},
        ],
    )
    for offset in range(29):
        day = date(2028, 2, 1) + timedelta(days=offset)
        for _ in range(2):  # a sampler that runs twice a day still meters once
            platform.meter.record(sources.storage_usage(org, 30 * 10**9, day, "Pacific/Kiritimati")).wait()
    platform.meter.record_and_wait(
        sources.ingest_usage("file-1", org, 4 * 10**9, datetime(2028, 2, 3, tzinfo=UTC))
    )
    with platform.db.read_session() as session:
        february = invoices.statement(session, org, "2028-02", now=clocked.clock.now(), currency="USD")
    lines = {line.unit: (line.quantity, line.amount) for line in february.lines}
    assert lines["storage_gb_month_micros"] == (29 * 1_034_483, "3.00")  # 30 GB for the whole month
    assert lines["bytes_ingested"] == (4 * 10**9, "0.20")


def test_compute_is_priced_per_second_by_resource_class(clocked: Clocked) -> None:
    platform = clocked.platform
    org = make_org(platform, "acme")
    make_pricebook(
        platform,
        [
            {"unit": "compute_ms", "price": "0.002", "resource_class": "gpu"},
            {"unit": "compute_ms", "price": "0.0001", "resource_class": "cpu"},
        ],
    )
    now = clocked.clock.now()
    gpu = platform.meter.record_and_wait(
        sources.compute_usage("job_1", "1.a", 0, org, resource_class="gpu", seconds=90.5, at=now)
    )
    cpu = platform.meter.record_and_wait(
        sources.compute_usage("job_2", "1.a", 0, org, resource_class="cpu", seconds=90.5, at=now)
    )
    again = platform.meter.record_and_wait(
        sources.compute_usage("job_1", "1.a", 0, org, resource_class="gpu", seconds=90.5, at=now)
    )
    assert (gpu.cost_micros, cpu.cost_micros, again.new) == (181_000, 9_050, False)


def test_a_training_job_reserves_per_interval_and_stops_when_credit_runs_out(clocked: Clocked) -> None:
    platform = clocked.platform
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "compute_ms", "price": "0.01", "resource_class": "gpu"}])
    make_account(platform, org, prepaid_micros=10_000_000)  # 10.00 of credit: 1,000 GPU-seconds
    intervals = 0
    with pytest.raises(errors.InsufficientQuota):
        for interval in range(100):
            admission = platform.gate.admit(
                org,
                None,
                sources.compute_event_id("job_1", "1.a", interval),
                worst_case=sources.compute_quantities(300),
                rate_limited=False,
                resource_class="gpu",
            )
            clocked.clock.advance(240)  # the interval used 240 of its 300 seconds
            platform.gate.complete(admission, sources.compute_quantities(240)).wait()
            intervals += 1
    # 3 × 240 s = 7.20 spent; a fourth interval's worst case (3.00) no longer fits in the 2.80 left.
    assert intervals == 3
    platform.metering.budgets.return_leases()  # what this server's lease still held
    with platform.db.read_session() as session:
        account = session.get(BillingAccount, org)
        assert account is not None
        assert (account.unbilled_micros, account.reserved_micros) == (7_200_000, 0)


def test_trained_tokens_are_metered_with_the_job_result_once(clocked: Clocked) -> None:
    """A fine-tuning job meters its trained tokens in the transaction that marks it succeeded: an
    attempt whose commit fails meters nothing, and a retried attempt that writes it again adds
    nothing (same event id), to the ledger, the hourly sums or the account."""
    platform = clocked.platform
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "trained_tokens", "price": "0.50"}])
    make_account(platform, org)
    event = sources.trained_tokens_usage("ftjob-1", org, 6_000, clocked.clock.now(), model="qwen:1")

    def attempt(fail: bool) -> bool:
        with platform.db.session() as session:
            written = record_in(Sql.of(session, platform.db), platform.metering.prices, platform.clock, event)
            if fail:
                raise RuntimeError("the attempt died before its commit")
        return written.new

    with pytest.raises(RuntimeError):
        attempt(fail=True)
    assert (attempt(fail=False), attempt(fail=False)) == (True, False)
    period = f"{clocked.clock.now():%Y-%m}"
    with platform.db.read_session() as session:
        statement = invoices.statement(session, org, period, now=clocked.clock.now(), currency="USD")
        account = session.get(BillingAccount, org)
        assert account is not None and account.unbilled_micros == 3_000_000
        rows = session.scalars(select(UsageRecord).where(UsageRecord.org_id == org)).all()
    assert [(r.event_id, r.qty_trained_tokens, r.cost_trained_tokens) for r in rows] == [
        ("ftjob-1:trained_tokens", 6_000, 3_000_000)
    ]
    usage = [(line.unit, line.quantity, line.amount) for line in statement.lines if line.kind == "usage"]
    assert usage == [("trained_tokens", 6_000, "3.00")]
