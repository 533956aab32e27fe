"""The usage ledger on each database: exactly-once writes, retries, failed writes, backpressure,
and budgets that concurrency cannot overrun."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from openmaas import errors
from openmaas.bootstrap import Platform
from openmaas.metering import settlement
from openmaas.metering.events import UsageEvent
from openmaas.metering.ledger import UsageLedger
from openmaas.metering.tables import BillingAccount, UsageRecord
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_account, make_org, make_pricebook
from tests.integration.metering.hourly_check import assert_hours_match_ledger
from tests.support.served import Served


def _count(platform: Platform, org_id: str) -> tuple[int, int]:
    with platform.db.read_session() as session:
        events = session.scalar(
            select(func.count(func.distinct(UsageRecord.event_id))).where(UsageRecord.org_id == org_id)
        )
        cost = session.scalar(
            select(func.coalesce(func.sum(UsageRecord.cost_micros), 0)).where(UsageRecord.org_id == org_id)
        )
    return int(events or 0), int(cost or 0)


def _prepaid(platform: Platform, org_id: str, balance_micros: int) -> None:
    make_account(platform, org_id, prepaid_micros=balance_micros)


def test_a_retried_event_is_metered_once(platform: Platform) -> None:
    org = make_org(platform, "acme")
    make_pricebook(
        platform, [{"unit": "requests", "price": "0.01"}, {"unit": "input_tokens", "price": "0.50"}]
    )
    now = platform.clock.now()
    usage = UsageEvent("req_1", org, {"requests": 1, "input_tokens": 2000}, now)
    first = platform.meter.record_and_wait(usage)
    again = platform.meter.record_and_wait(usage)
    assert (first.new, first.cost_micros) == (True, 1_010_000)
    assert (again.new, again.cost_micros) == (False, 0)
    # the same id twice in one batch also meters once
    receipts = [platform.meter.record(UsageEvent("req_2", org, {"requests": 1}, now)) for _ in range(5)]
    assert sum(r.wait().new for r in receipts) == 1
    assert _count(platform, org) == (2, 1_020_000)
    assert sum(cost for _, cost, _ in assert_hours_match_ledger(platform, org).values()) == 1_020_000
    with platform.db.read_session() as session:
        assert session.get(BillingAccount, org).unbilled_micros == 1_020_000  # type: ignore[union-attr]


def test_a_failed_write_is_retried_and_not_lost(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    org = make_org(platform, "acme")
    now = platform.clock.now()
    failures = {"left": 2}
    real_insert = settlement.insert_new

    def insert_then_fail(sql: settlement.Sql, rows: list[tuple[object, ...]]) -> set[tuple[str, str]]:
        inserted = real_insert(sql, rows)  # the rows are written, then the transaction fails
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("COMMIT", (), Exception("disk I/O error (injected)"))
        return inserted

    real_one_statement = settlement.insert_and_spend

    def fail_then_insert(
        sql: settlement.Sql,
        rows: list[tuple[object, ...]],
        periods: list[str],
        leases: list[str | None],
        hours: list[object],
    ) -> set[str] | None:
        # PostgreSQL's one-statement batch is atomic on its own: a failed one wrote nothing.
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("INSERT", (), Exception("server closed the connection (injected)"))
        return real_one_statement(sql, rows, periods, leases, hours)

    monkeypatch.setattr(settlement, "insert_new", insert_then_fail)
    monkeypatch.setattr(settlement, "insert_and_spend", fail_then_insert)
    receipts = [platform.meter.record(UsageEvent(f"req_{i}", org, {"requests": 1}, now)) for i in range(50)]
    assert all(r.wait(timeout=20).new for r in receipts)
    assert failures["left"] == 0
    assert _count(platform, org)[0] == 50
    assert assert_hours_match_ledger(platform, org)[("requests", "", "", "", "", "")] == (50, 0, 50)


def test_a_full_queue_answers_503_instead_of_growing(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = make_org(platform, "acme")
    now = platform.clock.now()
    ledger = UsageLedger(platform.db, platform.metering.prices, platform.clock, max_queue=3)
    gate = threading.Event()
    real_insert = settlement.insert_new

    def stalled_insert(sql: settlement.Sql, rows: list[tuple[object, ...]]) -> set[tuple[str, str]]:
        gate.wait(10)  # holds the writer inside its first transaction
        return real_insert(sql, rows)

    monkeypatch.setattr(settlement, "insert_new", stalled_insert)
    try:
        ledger.record(UsageEvent("first", org, {"requests": 1}, now))
        while ledger.backlog:  # until the writer has taken it and is stuck writing it
            time.sleep(0.001)
        accepted, refused = 0, 0
        for i in range(10):
            try:
                ledger.record(UsageEvent(f"req_{i}", org, {"requests": 1}, now))
                accepted += 1
            except errors.ServiceUnavailable as exc:
                refused += 1
                assert exc.headers["Retry-After"] == "1"
        assert (accepted, refused) == (3, 7)
    finally:
        gate.set()
        ledger.close()
    assert _count(platform, org)[0] == 4


@pytest.mark.parametrize("kind", ["prepaid", "monthly_cap"])
def test_concurrent_requests_never_overspend(platform: Platform, kind: str) -> None:
    """200 concurrent requests against a budget that admits exactly 37: exactly 37 are served."""
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "requests", "price": "0.25"}])
    admitted = 37
    budget = admitted * 250_000 + 100_000
    if kind == "prepaid":
        make_account(platform, org, prepaid_micros=budget)
    else:
        make_account(platform, org, cap_micros=budget)
    platform.metering.limits.forget()
    start = threading.Barrier(50)

    def one_request(i: int) -> str:
        if i < 50:
            start.wait()
        try:
            admission = platform.gate.admit(org, None, f"req_{i:03d}", worst_case={"requests": 1})
        except errors.InsufficientQuota:
            return "refused"
        except errors.RateLimited:
            return "limited"
        platform.gate.complete(admission, {"requests": 1}).wait()
        return "served"

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(one_request, range(200)))
    assert outcomes.count("served") == admitted
    assert outcomes.count("refused") == 200 - admitted
    assert _count(platform, org) == (admitted, admitted * 250_000)
    platform.metering.budgets.return_leases()  # what this server's lease still held
    with platform.db.read_session() as session:
        account = session.get(BillingAccount, org)
        assert account is not None
        assert account.reserved_micros == 0
        assert account.period_spend_micros == account.unbilled_micros == admitted * 250_000


def test_abandoned_requests_release_their_hold_and_write_nothing(platform: Platform) -> None:
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "output_tokens", "price": "2.00"}])
    _prepaid(platform, org, 3_000_000)
    first = platform.gate.admit(org, None, "req_a", worst_case={"output_tokens": 1000})
    with pytest.raises(errors.InsufficientQuota) as refused:
        platform.gate.admit(org, None, "req_b", worst_case={"output_tokens": 1000})
    assert refused.value.status == 402 and refused.value.code == "insufficient_quota"
    platform.gate.abandon(first)
    second = platform.gate.admit(org, None, "req_c", worst_case={"output_tokens": 1000})
    # A dropped stream is billed for what was generated: 250 of 1000 tokens.
    assert platform.gate.complete(second, {"output_tokens": 250}).wait().cost_micros == 500_000
    assert _count(platform, org) == (1, 500_000)
    with platform.db.session() as session:
        session.execute(update(BillingAccount).where(BillingAccount.org_id == org).values(prepaid=False))


def test_a_crashed_requests_hold_expires_and_is_released_exactly_once(clocked: Clocked) -> None:
    platform = clocked.platform
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "requests", "price": "0.40"}])
    _prepaid(platform, org, 1_000_000)
    lost = platform.gate.admit(org, None, "req_lost", worst_case={"requests": 1})  # its server dies
    with pytest.raises(errors.Conflict):  # the same request id twice in flight holds once
        platform.gate.admit(org, None, "req_lost", worst_case={"requests": 1})
    served = platform.gate.admit(org, None, "req_served", worst_case={"requests": 1})
    with pytest.raises(errors.InsufficientQuota):
        platform.gate.admit(org, None, "req_3", worst_case={"requests": 1})
    platform.gate.complete(served, {"requests": 1}).wait()
    clocked.clock.advance(3601)
    assert platform.metering.budgets.release_expired() == 1
    assert platform.metering.budgets.release_expired() == 0
    third = platform.gate.admit(org, None, "req_3", worst_case={"requests": 1})
    platform.gate.complete(third, {"requests": 1}).wait()
    platform.gate.complete(lost, {"requests": 1}).wait()  # late usage is metered, its hold not freed twice
    with platform.db.read_session() as session:
        account = session.get(BillingAccount, org)
        assert account is not None
        assert (account.reserved_micros, account.unbilled_micros) == (0, 1_200_000)


def test_a_key_cap_limits_that_key_only(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    platform = clocked.platform
    acme = served.tenant("acme")
    with served.admin() as admin:
        other = admin.post(f"/v1/admin/organizations/{acme.org_id}/api_keys", json={"name": "other"}).json()
        capped = admin.put(
            f"/v1/admin/organizations/{acme.org_id}/api_keys/{acme.key_id}/budget",
            json={"monthly_cap": "1.00"},
        )
        assert capped.status_code == 200 and capped.json()["monthly_cap"] == "1.00"
        unknown = admin.put(f"/v1/admin/organizations/{acme.org_id}/api_keys/key_nope/budget", json={})
        assert unknown.status_code == 404
    make_pricebook(platform, [{"unit": "requests", "price": "0.30"}])
    served_by_key = {acme.key_id: 0, other["id"]: 0}
    for i in range(8):
        for key_id in served_by_key:
            try:
                admission = platform.gate.admit(
                    acme.org_id, key_id, f"r{i}-{key_id}", worst_case={"requests": 1}
                )
            except errors.InsufficientQuota:
                continue
            platform.gate.complete(admission, {"requests": 1}).wait()
            served_by_key[key_id] += 1
    assert served_by_key == {acme.key_id: 3, other["id"]: 8}


def test_a_receipt_can_be_awaited_without_parking_a_thread(platform: Platform) -> None:
    org = make_org(platform, "acme")
    now = platform.clock.now()

    async def serve() -> list[bool]:
        receipts = [
            platform.meter.record(UsageEvent(f"req_{i}", org, {"requests": 1}, now)) for i in range(20)
        ]
        return [(await receipt.wait_async()).new for receipt in receipts]

    assert asyncio.run(serve()) == [True] * 20
    assert _count(platform, org)[0] == 20


def test_admission_from_memory_only_when_nothing_needs_the_database(platform: Platform) -> None:
    """`admit_nowait` (the event loop's path) answers from the caches and this server's budget
    lease, and declines — doing nothing — whenever limits or budget settings are not cached or the
    lease must be taken or extended in the database."""
    free = make_org(platform, "free")
    gate = platform.gate
    assert gate.admit_nowait(free, None, "req_n1", worst_case={"requests": 1}) is None  # cold caches
    gate.admit(free, None, "req_n2", worst_case={"requests": 1})  # fills them (in a thread, normally)
    headers: dict[str, str] = {}
    admission = gate.admit_nowait(free, None, "req_n3", worst_case={"requests": 1}, headers=headers)
    assert admission is not None and admission.hold.hold_id is None
    assert headers["x-ratelimit-limit-requests"]
    gate.complete(admission, {"requests": 1}).wait()
    assert _count(platform, free)[0] == 1

    make_pricebook(platform, [{"unit": "requests", "price": "1.00"}])
    prepaid = make_org(platform, "prepaid")
    _prepaid(platform, prepaid, 3_000_000)
    assert gate.admit_nowait(prepaid, None, "req_p1", worst_case={"requests": 1}) is None  # cold
    held = gate.admit(prepaid, None, "req_p1", worst_case={"requests": 1})  # takes a lease of 1.00
    assert held.hold.lease
    assert gate.admit_nowait(prepaid, None, "req_p2", worst_case={"requests": 1}) is None  # used up
    gate.abandon(held)  # back into the lease, in memory
    from_lease = gate.admit_nowait(prepaid, None, "req_p3", worst_case={"requests": 1})
    assert from_lease is not None and from_lease.hold.hold_id == held.hold.hold_id
    assert gate.complete(from_lease, {"requests": 1}).wait().cost_micros == 1_000_000
    assert _count(platform, prepaid) == (1, 1_000_000)
