"""Invoices on each database: calendar months in the org's zone, leap February, a price change
mid-month, graduated tiers, included quantities, the plan fee, and finalisation with credit."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from openmaas.billing import credits, invoices
from openmaas.metering.tables import BillingAccount
from openmaas.schemas.billing import CreditTopUp, Invoice
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_org, make_pricebook, meter
from tests.support.served import Served


def _statement(clocked: Clocked, org: str, period: str) -> Invoice:
    with clocked.platform.db.read_session() as session:
        return invoices.statement(session, org, period, now=clocked.clock.now(), currency="USD")


def _usage_lines(invoice: Invoice) -> list[tuple[str | None, int | None, str]]:
    return [(line.unit, line.quantity, line.amount) for line in invoice.lines if line.kind == "usage"]


def test_months_follow_the_org_zone_at_utc_plus_14(clocked: Clocked) -> None:
    platform = clocked.platform
    org = make_org(platform, "kiribati", timezone="Pacific/Kiritimati")
    make_pricebook(platform, [{"unit": "requests", "price": "1.00"}])
    meter(platform, "dec", org, datetime(2026, 12, 31, 9, 59, 59, tzinfo=UTC), {"requests": 1})
    meter(platform, "jan", org, datetime(2026, 12, 31, 10, 0, 0, tzinfo=UTC), {"requests": 2})
    december, january = _statement(clocked, org, "2026-12"), _statement(clocked, org, "2027-01")
    assert _usage_lines(december) == [("requests", 1, "1.00")]
    assert _usage_lines(january) == [("requests", 2, "2.00")]
    assert january.period_start == datetime(2026, 12, 31, 10, 0, tzinfo=UTC)


def test_leap_february_is_29_days(clocked: Clocked) -> None:
    platform = clocked.platform
    clocked.move_to(datetime(2028, 2, 1, tzinfo=UTC))
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "rows", "price": "0.10"}])
    meter(platform, "a", org, datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC), {"rows": 10})
    meter(platform, "b", org, datetime(2028, 3, 1, 0, 0, 0, tzinfo=UTC), {"rows": 20})
    february = _statement(clocked, org, "2028-02")
    assert (february.period_end - february.period_start).days == 29
    assert _usage_lines(february) == [("rows", 10, "1.00")]
    assert _usage_lines(_statement(clocked, org, "2028-03")) == [("rows", 20, "2.00")]


def test_a_price_change_mid_month_keeps_past_usage_at_its_price(clocked: Clocked) -> None:
    platform = clocked.platform
    clocked.move_to(datetime(2027, 3, 1, tzinfo=UTC))
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "input_tokens", "price": "0.50"}])
    make_pricebook(
        platform,
        [{"unit": "input_tokens", "price": "0.20"}],
        effective_from=datetime(2027, 3, 16, tzinfo=UTC),
    )
    meter(platform, "before", org, datetime(2027, 3, 15, 23, 0, tzinfo=UTC), {"input_tokens": 10_000})
    meter(platform, "after", org, datetime(2027, 3, 16, 1, 0, tzinfo=UTC), {"input_tokens": 10_000})
    march = _statement(clocked, org, "2027-03")
    assert _usage_lines(march) == [("input_tokens", 10_000, "5.00"), ("input_tokens", 10_000, "2.00")]
    assert [line.description for line in march.lines] == [
        "input_tokens (default v1)",
        "input_tokens (default v2)",
    ]
    assert march.subtotal == "7.00"


def test_graduated_tiers_included_quantity_and_plan_fee(clocked: Clocked) -> None:
    platform = clocked.platform
    clocked.move_to(datetime(2027, 5, 1, tzinfo=UTC))
    org = make_org(platform, "acme")
    make_pricebook(
        platform,
        [
            {"unit": "requests", "price": "0.01", "included": 1_000},
            {
                "unit": "output_tokens",
                "price": "0",
                "tiers": [{"up_to": 100_000, "price": "2.00"}, {"up_to": None, "price": "1.00"}],
            },
        ],
        monthly_fee="20.00",
    )
    for i in range(3):  # 1,500 requests and 150,000 output tokens in three events
        meter(
            platform,
            f"e{i}",
            org,
            datetime(2027, 5, 10 + i, tzinfo=UTC),
            {"requests": 500, "output_tokens": 50_000},
        )
    may = _statement(clocked, org, "2027-05")
    lines = {line.unit: line for line in may.lines}
    assert lines[None].kind == "plan_fee" and lines[None].amount == "20.00"
    assert lines["requests"].amount == "5.00"  # 500 above the 1,000 included, at 0.01
    assert lines["output_tokens"].amount == "250.00"  # 100K at 2.00/1K + 50K at 1.00/1K
    assert may.subtotal == "275.00"


def test_finalising_a_month_applies_credit_and_leaves_a_draft_for_the_next(clocked: Clocked) -> None:
    platform = clocked.platform
    clocked.move_to(datetime(2027, 6, 2, tzinfo=UTC))
    org = make_org(platform, "acme", timezone="America/New_York")
    make_pricebook(platform, [{"unit": "requests", "price": "2.50"}])
    with platform.db.session() as session:
        credits.top_up(
            session,
            org,
            CreditTopUp(amount="6.00"),
            actor_key_id="key_op",
            now=clocked.clock.now(),
            currency="USD",
        )
    meter(platform, "a", org, datetime(2027, 6, 20, tzinfo=UTC), {"requests": 4})
    assert _statement(clocked, org, "2027-06").status == "draft"
    clocked.move_to(datetime(2027, 7, 1, 3, 59, tzinfo=UTC))  # still June 30th in New York
    with platform.db.session() as session:
        assert invoices.finalize_due(session, now=clocked.clock.now(), currency="USD") == []
    clocked.move_to(datetime(2027, 7, 1, 4, 0, tzinfo=UTC))
    with platform.db.session() as session:
        (invoice_id,) = invoices.finalize_due(session, now=clocked.clock.now(), currency="USD")
    with platform.db.session() as session:
        assert invoices.finalize_due(session, now=clocked.clock.now(), currency="USD") == []
    june = _statement(clocked, org, "2027-06")
    assert (june.id, june.status, june.subtotal) == (invoice_id, "finalized", "10.00")
    assert (june.credit_applied, june.amount_due) == ("6.00", "4.00")
    with platform.db.read_session() as session:
        account = session.get(BillingAccount, org)
        assert account is not None
        assert (account.balance_micros, account.unbilled_micros) == (0, 0)
    assert _statement(clocked, org, "2027-07").status == "draft"


def test_a_twin_finalisation_waits_for_the_first_and_finds_the_month_done(clocked: Clocked) -> None:
    """Two processes finalising at once (two schedulers, or the operator's route beside one): the
    second waits for the first's lock on the account and then has nothing left to do."""
    platform = clocked.platform
    clocked.move_to(datetime(2027, 6, 2, tzinfo=UTC))
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "requests", "price": "2.50"}])
    meter(platform, "a", org, datetime(2027, 6, 20, tzinfo=UTC), {"requests": 4})
    clocked.move_to(datetime(2027, 7, 2, tzinfo=UTC))
    now = clocked.clock.now()

    def twin() -> list[str]:
        with platform.db.session() as session:
            return invoices.finalize_due(session, now=now, currency="USD")

    with ThreadPoolExecutor(1) as pool, platform.db.session() as session:
        credits.locked_account(session, org)
        waiting = pool.submit(twin)
        time.sleep(0.5)  # the twin has read that June is open and now waits for the lock
        assert not waiting.done()
        first = invoices.finalize_due(session, now=now, currency="USD")
        session.commit()
        assert len(first) == 1
        assert waiting.result(timeout=30) == []
    assert _statement(clocked, org, "2027-06").id == first[0]


def test_months_past_the_calendar_are_422_not_500(served: Served) -> None:
    """`GET /v1/invoices/9999-12` (and 0000-01) overflowed the calendar into a 500 (found by
    schemathesis)."""
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        for period in ["9999-12", "0000-01", "0999-12", "2026-13", "٢٠٢٦-01"]:
            response = client.get(f"/v1/invoices/{period}")
            assert response.status_code == 422, (period, response.text)
            assert response.json()["error"]["param"] == "period"
        assert client.get("/v1/invoices/8999-12").status_code == 200
        assert client.get("/v1/invoices/1000-01").status_code == 200
