"""`GET /v1/usage` on each database: sums per unit (never one quantity of unlike units), read
from the hourly sums rather than the events, exact at boundaries inside an hour and at local
midnights (also after an organisation changed zones), models shown by name, and a flag when no
price applied."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event

from openmaas.bootstrap import Platform
from openmaas.tenancy.tables import Organization
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_pricebook, make_version, meter
from tests.support.served import Served


@contextmanager
def _statements(platform: Platform) -> Iterator[list[str]]:
    """The SQL statements the platform runs meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(platform.db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(platform.db.engine, "before_cursor_execute", record)


def _rows(report: dict[str, Any], *fields: str) -> list[tuple[Any, ...]]:
    return [tuple(bucket[f] for f in fields) for bucket in report["data"]]


def test_a_report_over_no_usage_is_empty(clocked_served: tuple[Served, Clocked]) -> None:
    served, _ = clocked_served
    acme = served.tenant("acme")
    with served.client(acme.key) as client:
        for params in ({"group_by": "", "end": "2000-01-01T00:00:00Z"}, {"group_by": "day,model"}, {}):
            answer = client.get("/v1/usage", params=params)
            assert answer.status_code == 200, answer.text
            assert answer.json()["data"] == []


def test_units_are_never_added_together(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    acme = served.tenant("acme")
    at = datetime(2026, 11, 20, 9, tzinfo=UTC)
    meter(clocked.platform, "r1", acme.org_id, at, {"requests": 1, "rows": 260}, model="m:1")
    meter(clocked.platform, "r2", acme.org_id, at, {"requests": 1, "rows": 3}, model="m:2")
    with served.client(acme.key) as client:
        ungrouped = client.get("/v1/usage", params={"group_by": ""}).json()
        assert _rows(ungrouped, "unit", "quantity", "events") == [("requests", 2, 2), ("rows", 263, 2)]
        by_day = client.get("/v1/usage", params={"group_by": "day"}).json()
        assert _rows(by_day, "day", "unit", "quantity") == [
            ("2026-11-20", "requests", 2),
            ("2026-11-20", "rows", 263),
        ]
        by_model = client.get("/v1/usage", params={"group_by": "model"}).json()
        assert _rows(by_model, "model", "unit", "quantity") == [
            ("m:1", "requests", 1),
            ("m:1", "rows", 260),
            ("m:2", "requests", 1),
            ("m:2", "rows", 3),
        ]


def test_reports_and_invoices_read_hourly_sums_not_events(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    acme = served.tenant("acme")
    make_pricebook(clocked.platform, [{"unit": "requests", "price": "0.01"}])
    for i in range(30):
        at = datetime(2026, 11, 21 + i % 9, i % 24, tzinfo=UTC)
        meter(clocked.platform, f"r{i}", acme.org_id, at, {"requests": 1})
    month = {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
    with served.client(acme.key) as client, _statements(clocked.platform) as seen:
        report = client.get("/v1/usage", params={"group_by": "day,model", **month}).json()
        total = client.get("/v1/usage", params={"group_by": "", **month}).json()
        invoice = client.get("/v1/invoices/2026-11").json()
    assert sum(bucket["events"] for bucket in report["data"]) == 30
    assert _rows(total, "unit", "quantity", "cost") == [("requests", 30, "0.30")]
    assert invoice["subtotal"] == "0.30"
    assert any("usage_hours" in statement for statement in seen)
    assert not [statement for statement in seen if "usage_events" in statement]


def test_boundaries_inside_an_hour_count_each_event_once(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    acme = served.tenant("acme")
    for minute, hour in ((5, 10), (40, 10), (20, 11), (50, 11)):
        at = datetime(2026, 11, 20, hour, minute, tzinfo=UTC)
        meter(clocked.platform, f"r{hour}{minute}", acme.org_id, at, {"requests": 1, "rows": minute})
    with served.client(acme.key) as client:
        inside = client.get(
            "/v1/usage",
            params={"group_by": "", "start": "2026-11-20T10:30:00Z", "end": "2026-11-20T11:30:00Z"},
        ).json()
        assert _rows(inside, "unit", "quantity", "events") == [("requests", 2, 2), ("rows", 60, 2)]
        by_day = client.get(
            "/v1/usage",
            params={"group_by": "day", "start": "2026-11-20T10:05:00Z", "end": "2026-11-20T11:50:00Z"},
        ).json()
        assert _rows(by_day, "day", "unit", "quantity") == [
            ("2026-11-20", "requests", 3),
            ("2026-11-20", "rows", 65),
        ]


def test_days_of_a_half_hour_zone_also_after_a_zone_change(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    platform = clocked.platform
    acme = served.tenant("acme")
    _set_zone(platform, acme.org_id, "Asia/Kolkata")  # UTC+5:30: midnight is 18:30 UTC
    meter(platform, "before", acme.org_id, datetime(2026, 11, 20, 18, 29, tzinfo=UTC), {"requests": 1})
    meter(platform, "after", acme.org_id, datetime(2026, 11, 20, 18, 31, tzinfo=UTC), {"requests": 2})
    meter(platform, "late", acme.org_id, datetime(2026, 11, 20, 23, 50, tzinfo=UTC), {"requests": 4})
    with served.client(acme.key) as client, _statements(platform) as seen:
        kolkata = client.get("/v1/usage", params={"group_by": "day"}).json()
    assert _rows(kolkata, "day", "quantity") == [("2026-11-20", 1), ("2026-11-21", 6)]
    assert not [statement for statement in seen if "usage_events" in statement]
    # Now in UTC: the hours written in Kolkata's (half past) overlap the new ones (whole hours).
    _set_zone(platform, acme.org_id, "UTC")
    meter(platform, "next", acme.org_id, datetime(2026, 11, 21, 0, 10, tzinfo=UTC), {"requests": 8})
    meter(platform, "later", acme.org_id, datetime(2026, 11, 21, 5, tzinfo=UTC), {"requests": 16})
    with served.client(acme.key) as client:
        utc = client.get("/v1/usage", params={"group_by": "day"}).json()
        assert _rows(utc, "day", "quantity", "events") == [("2026-11-20", 7, 3), ("2026-11-21", 24, 2)]
        since = client.get("/v1/usage", params={"group_by": "", "start": "2026-11-21T00:00:00Z"}).json()
        assert _rows(since, "quantity", "events") == [(24, 2)]


def test_days_of_summer_time_changes_and_days_apart(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    platform = clocked.platform
    acme = served.tenant("acme")
    _set_zone(platform, acme.org_id, "Europe/Berlin")  # 29 March 2026 has 23 hours; 25 October 25
    for name, at, requests in (
        ("sat", datetime(2026, 3, 28, 22, 30), 1),  # 23:30 CET, Saturday
        ("sun", datetime(2026, 3, 28, 23, 10), 2),  # 00:10 CET, Sunday
        ("sun-late", datetime(2026, 3, 29, 21, 59), 4),  # 23:59 CEST
        ("tue", datetime(2026, 3, 30, 22, 1), 8),  # 00:01 CEST, Tuesday
        ("apart", datetime(2026, 4, 5, 10), 16),
        ("oct", datetime(2026, 10, 25, 23, 59), 32),  # 00:59 CET, Monday: Sunday had 25 hours
        ("oct-sun", datetime(2026, 10, 25, 0, 30), 64),  # 02:30 CEST, before the change
        ("oct-sun-again", datetime(2026, 10, 25, 1, 30), 128),  # 02:30 CET, after it
    ):
        meter(platform, name, acme.org_id, at.replace(tzinfo=UTC), {"requests": requests})
    with served.client(acme.key) as client, _statements(platform) as seen:
        by_day = client.get("/v1/usage", params={"group_by": "day"}).json()
        total = client.get("/v1/usage", params={"group_by": "", "start": "2026-03-29T00:00:00+01:00"}).json()
    assert _rows(by_day, "day", "quantity", "events") == [
        ("2026-03-28", 1, 1),
        ("2026-03-29", 6, 2),
        ("2026-03-31", 8, 1),
        ("2026-04-05", 16, 1),
        ("2026-10-25", 192, 2),
        ("2026-10-26", 32, 1),
    ]
    assert _rows(total, "quantity", "events") == [(254, 7)]
    assert not [statement for statement in seen if "usage_events" in statement]


def _set_zone(platform: Platform, org_id: str, timezone: str) -> None:
    with platform.db.session() as session:
        org = session.get(Organization, org_id)
        assert org is not None
        org.timezone = timezone
    platform.metering.prices.invalidate()


def test_models_are_shown_by_name_and_a_marketplace_model_by_its_listing(
    clocked_served: tuple[Served, Clocked],
) -> None:
    served, clocked = clocked_served
    seller, buyer = served.tenant("seller"), served.tenant("buyer")
    llama = make_version(clocked.platform, seller.org_id, "llama")
    with served.client(seller.key) as client:
        listing = client.post(
            "/v1/marketplace/listings",
            json={"model": "llama:1", "components": [{"unit": "requests", "price": "0.5"}]},
        ).json()
    at = datetime(2026, 11, 20, 12, tzinfo=UTC)
    meter(clocked.platform, "own", seller.org_id, at, {"requests": 1}, model=llama)
    meter(clocked.platform, "bought", buyer.org_id, at, {"requests": 2}, model=llama)
    with served.client(seller.key) as client:
        own = client.get("/v1/usage", params={"group_by": "model"}).json()
        assert _rows(own, "model", "model_name", "quantity") == [(llama, "llama:1", 1)]
        by_name = client.get("/v1/usage", params={"model": "llama:1"}).json()
        assert _rows(by_name, "unit", "quantity") == [("requests", 1)]
        lines = client.get("/v1/usage", params={"granularity": "event"}).json()
        assert _rows(lines, "request_id", "model_name") == [("own", "llama:1")]
    with served.client(buyer.key) as client:
        bought = client.get("/v1/usage", params={"group_by": "model"}).json()
        assert _rows(bought, "model_name", "quantity", "cost") == [(listing["id"], 2, "1.00")]
        assert "llama" not in str(bought)  # no more than the listing shows


def test_usage_that_no_price_applied_to_is_flagged(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    acme = served.tenant("acme")
    meter(clocked.platform, "free", acme.org_id, datetime(2026, 11, 20, 9, tzinfo=UTC), {"requests": 1})
    with served.client(acme.key) as client:
        report = client.get("/v1/usage").json()
        assert (report["unpriced"], _rows(report, "cost")) == (True, [("0.00",)])
        assert client.get("/v1/usage", params={"start": "2026-11-21T00:00:00Z"}).json()["unpriced"] is False


def test_event_pages_follow_on_and_refuse_a_foreign_cursor(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    acme = served.tenant("acme")
    at = datetime(2026, 11, 20, 9, tzinfo=UTC)
    for i in range(5):
        meter(clocked.platform, f"r{i}", acme.org_id, at, {"requests": 1, "input_tokens": i + 1})
    seen: list[tuple[str, str]] = []
    with served.client(acme.key) as client:
        params: dict[str, Any] = {"granularity": "event", "limit": 3}
        for _ in range(10):
            page = client.get("/v1/usage", params=params).json()
            seen += _rows(page, "request_id", "unit")
            if not page["has_more"]:
                break
            params["after"] = page["last_id"]
        for bad in ("12", "9" * 40, "1.2.99", "1.2.100"):
            refused = client.get("/v1/usage", params={"granularity": "event", "after": bad})
            assert refused.status_code == 422 and refused.json()["error"]["param"] == "after"
    assert seen == [(f"r{i}", unit) for i in reversed(range(5)) for unit in ("input_tokens", "requests")]


def test_report_bounds_are_date_times_with_a_zone(served: Served) -> None:
    """A bound without a time zone (or a bare date) answered 500, a number of seconds was taken
    as a date (found by schemathesis); the extremes of the calendar are fine."""
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        for query in ["start=2020-01-01", "end=2020-01-01T00:00:00", "start=0.5", "end=1700000000"]:
            response = client.get(f"/v1/usage?{query}")
            assert response.status_code == 422, (query, response.text)
            assert response.json()["error"]["param"] == query.split("=")[0]
        for query in [
            "start=0001-01-01T00:00:00%2B05:00&end=9999-12-31T23:59:59-05:00",
            "start=0001-01-01T00:00:00Z&group_by=day&granularity=bucket",
            "end=9999-12-31T23:59:59Z&granularity=event",
        ]:
            response = client.get(f"/v1/usage?{query}")
            assert response.status_code == 200, (query, response.text)
