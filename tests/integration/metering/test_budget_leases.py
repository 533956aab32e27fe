"""Budget leases on each database: a server admits capped or prepaid requests against a slice of the
budget it reserved, the ledger deducts what they cost from the slice, and slices of several servers
never add up to more than the budget."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select, update

from openmaas import errors
from openmaas.bootstrap import Platform
from openmaas.metering.tables import BillingAccount, BudgetHold, UsageRecord
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_account, make_org, make_pricebook
from tests.support.platforms import make_platform

_CENT = 10_000


def _capped_org(platform: Platform, cap_micros: int, price: str) -> str:
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "requests", "price": price}])
    make_account(platform, org, cap_micros=cap_micros)
    return org


def _reserved(platform: Platform, org: str) -> tuple[int, int, int]:
    """The account's reservation, the sum of its hold rows (equal, always), and its spend."""
    with platform.db.read_session() as session:
        account = session.get(BillingAccount, org)
        held = session.scalar(
            select(func.coalesce(func.sum(BudgetHold.org_micros), 0)).where(BudgetHold.org_id == org)
        )
        spent = session.scalar(
            select(func.coalesce(func.sum(UsageRecord.cost_micros), 0)).where(UsageRecord.org_id == org)
        )
    assert account is not None
    return account.reserved_micros, int(held or 0), int(spent or 0)


def _serve(platform: Platform, org: str, request_id: str) -> bool:
    try:
        admission = platform.gate.admit(org, None, request_id, worst_case={"requests": 1})
    except errors.InsufficientQuota:
        return False
    platform.gate.complete(admission, {"requests": 1}).wait()
    return True


def test_one_lease_holds_many_requests_and_the_ledger_deducts_what_they_cost(platform: Platform) -> None:
    org = _capped_org(platform, 100_000_000, "0.01")
    gate = platform.gate
    admissions = [gate.admit(org, None, f"req_{i}", worst_case={"requests": 1}) for i in range(20)]
    with platform.db.read_session() as session:
        (lease,) = session.scalars(select(BudgetHold).where(BudgetHold.org_id == org)).all()
    # One slice for all 20: the smaller of 1/8 of the budget left and 64 worst cases.
    assert (lease.org_lease, lease.key_lease, lease.org_micros) == (True, False, 64 * _CENT)
    for admission in admissions[:15]:
        gate.complete(admission, {"requests": 1}).wait()
    for admission in admissions[15:]:
        gate.abandon(admission)
    assert _reserved(platform, org) == (49 * _CENT, 49 * _CENT, 15 * _CENT)
    assert platform.metering.budgets.return_leases() == 1
    assert _reserved(platform, org) == (0, 0, 15 * _CENT)


def test_an_idle_lease_goes_back_to_the_budget(clocked: Clocked) -> None:
    platform = clocked.platform
    org = _capped_org(platform, 100_000_000, "0.01")
    assert _serve(platform, org, "req_1")
    platform.metering.budgets.maintain()
    assert _reserved(platform, org) == (63 * _CENT, 63 * _CENT, _CENT)  # in use a moment ago: kept
    clocked.clock.advance(platform.settings.billing_lease_idle_s + 0.1)
    platform.metering.budgets.maintain()
    assert _reserved(platform, org) == (0, 0, _CENT)


def test_a_lowered_cap_trims_the_lease(platform: Platform) -> None:
    org = _capped_org(platform, 100_000_000, "0.01")
    assert _serve(platform, org, "req_0")
    with platform.db.session() as session:
        session.execute(
            update(BillingAccount).where(BillingAccount.org_id == org).values(monthly_cap_micros=5 * _CENT)
        )
    platform.metering.budgets.forget(org)  # what the operator's route does after a change
    served = [_serve(platform, org, f"req_{i}") for i in range(1, 8)]
    assert served == [True] * 4 + [False] * 3
    reserved, held, spent = _reserved(platform, org)
    assert reserved == held and spent == 5 * _CENT and reserved + spent <= 5 * _CENT


def test_two_servers_leasing_one_budget_never_overspend_it(
    platform: Platform, tmp_path: Path, database_url: str
) -> None:
    """Each server's requests fit in its own leases, and all leases fit in the cap: under 200
    concurrent requests across two servers the cap is never overrun; once their leases are back,
    what is left serves exactly the requests the cap still covers. (Near the cap, one server may
    refuse a request that another's unused lease could have paid for, until that lease goes back.)"""
    second = make_platform(tmp_path / "second", database_url)
    try:
        price, admitted = 250_000, 37
        org = _capped_org(platform, admitted * price + 100_000, "0.25")
        servers = [platform, second]

        def one_request(i: int) -> bool:
            return _serve(servers[i % 2], org, f"req_{i:03d}")

        with ThreadPoolExecutor(max_workers=32) as pool:
            first_round = sum(pool.map(one_request, range(200)))
        assert 0 < first_round <= admitted
        for server in servers:
            server.metering.budgets.return_leases()
        assert _reserved(platform, org) == (0, 0, first_round * price)
        # One server now: two would each keep a fraction of a request in their leases.
        second_round = sum(_serve(platform, org, f"req_{i:03d}") for i in range(200, 200 + admitted))
        assert first_round + second_round == admitted
        for server in servers:
            server.metering.budgets.return_leases()
        assert _reserved(platform, org) == (0, 0, admitted * price)
    finally:
        second.close()


def test_a_lease_with_a_long_request_in_flight_is_renewed_not_expired(clocked: Clocked) -> None:
    """A training interval or a long stream may hold a lease that takes no new requests for longer
    than its time to live: the server renews it meanwhile, so no sweep releases it under the request."""
    platform = clocked.platform
    budgets = platform.metering.budgets
    org = _capped_org(platform, 100_000_000, "0.01")
    long_request = platform.gate.admit(org, None, "req_long", worst_case={"requests": 1})
    for _ in range(5):  # 250 s in all, twice the lease's time to live
        clocked.clock.advance(50)
        budgets.maintain()
        assert budgets.release_expired() == 0
    platform.gate.complete(long_request, {"requests": 1}).wait()
    assert _reserved(platform, org) == (63 * _CENT, 63 * _CENT, _CENT)
    budgets.close()  # what a server does when it stops
    assert _reserved(platform, org) == (0, 0, _CENT)


def test_a_cap_lowered_below_the_spend_refuses_and_gives_the_whole_lease_back(platform: Platform) -> None:
    org = _capped_org(platform, 100_000_000, "0.01")
    assert _serve(platform, org, "req_0")
    with platform.db.session() as session:
        session.execute(
            update(BillingAccount).where(BillingAccount.org_id == org).values(monthly_cap_micros=_CENT // 2)
        )
    platform.metering.budgets.forget(org)
    assert not _serve(platform, org, "req_1")
    assert _reserved(platform, org) == (0, 0, _CENT)  # the trim is kept although the request is refused
