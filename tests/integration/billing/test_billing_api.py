"""Billing over HTTP: operator top-ups with an audit trail, budgets, usage reports, invoices as
JSON and CSV, the marketplace's revenue share on both statements, and honest 429s."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from fastapi import Request, Response

from openmaas.api.deps import PrincipalDep
from openmaas.api.routers.billing import router as billing_router
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_version, meter
from tests.support.served import Served


def test_top_ups_are_audited_idempotent_and_visible_to_the_tenant(
    clocked_served: tuple[Served, Clocked],
) -> None:
    served, _ = clocked_served
    acme, other = served.tenant("acme"), served.tenant("other")
    with served.admin() as admin:
        added = admin.post(
            f"/v1/admin/organizations/{acme.org_id}/credits",
            json={"amount": "12.50", "note": "welcome"},
            headers={"Idempotency-Key": "topup-1"},
        )
        again = admin.post(
            f"/v1/admin/organizations/{acme.org_id}/credits",
            json={"amount": "12.50", "note": "welcome"},
            headers={"Idempotency-Key": "topup-1"},
        )
        assert added.status_code == 201 and again.json() == added.json()
        assert added.json()["amount"] == "12.50" and added.json()["balance_after"] == "12.50"
        bad = admin.post(f"/v1/admin/organizations/{acme.org_id}/credits", json={"amount": 12.5})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "amount"
        audit = admin.get("/v1/admin/audit_log", params={"action": "admin.credits.add"}).json()["data"]
        assert [(e["organization_id"], e["status_code"]) for e in audit if e["outcome"] == "success"] == [
            (acme.org_id, 201),
            (acme.org_id, 201),
        ]
    with served.client(acme.key) as client:
        wallet = client.get("/v1/credits").json()
        assert (wallet["balance"], wallet["available"], wallet["currency"]) == ("12.50", "12.50", "USD")
        history = client.get("/v1/credits/transactions").json()["data"]
        assert [(t["kind"], t["amount"]) for t in history] == [("top_up", "12.50")]
    with served.client(other.key) as client:
        assert client.get("/v1/credits").json()["balance"] == "0.00"
        assert client.get("/v1/credits/transactions").json()["data"] == []


def test_usage_report_groups_filters_and_lists_events(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    acme = served.tenant("acme")
    with served.admin() as admin:
        book = {
            "components": [{"unit": "requests", "price": "0.01"}, {"unit": "output_tokens", "price": "1.00"}]
        }
        assert admin.post("/v1/admin/pricebooks", json=book).status_code == 201
    day1, day2 = datetime(2026, 11, 21, 8, tzinfo=UTC), datetime(2026, 11, 22, 8, tzinfo=UTC)
    clocked.move_to(datetime(2026, 11, 23, tzinfo=UTC))
    meter(clocked.platform, "r1", acme.org_id, day1, {"requests": 1, "output_tokens": 1000}, model="m:1")
    meter(clocked.platform, "r2", acme.org_id, day2, {"requests": 1, "output_tokens": 500}, model="m:2")
    with served.client(acme.key) as client:
        by_model = client.get("/v1/usage", params={"group_by": "model,unit"}).json()["data"]
        assert [(b["model"], b["unit"], b["quantity"], b["cost"]) for b in by_model] == [
            ("m:1", "output_tokens", 1000, "1.00"),
            ("m:1", "requests", 1, "0.01"),
            ("m:2", "output_tokens", 500, "0.50"),
            ("m:2", "requests", 1, "0.01"),
        ]
        by_day = client.get("/v1/usage", params={"group_by": "day", "model": "m:2"}).json()["data"]
        assert [(b["day"], b["unit"], b["events"], b["cost"]) for b in by_day] == [
            ("2026-11-22", "output_tokens", 1, "0.50"),  # units apart: never one quantity
            ("2026-11-22", "requests", 1, "0.01"),
        ]
        events = client.get("/v1/usage", params={"granularity": "event", "limit": 3}).json()
        assert [(e["request_id"], e["unit"]) for e in events["data"]] == [
            ("r2", "output_tokens"),
            ("r2", "requests"),
            ("r1", "output_tokens"),
        ]
        assert events["has_more"] is True
        rest = client.get("/v1/usage", params={"granularity": "event", "after": events["last_id"]}).json()
        assert [(e["request_id"], e["unit"]) for e in rest["data"]] == [("r1", "requests")]
        bad = client.get("/v1/usage", params={"group_by": "colour"})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "group_by"
        invoice = client.get("/v1/invoices/2026-11").json()
        assert (invoice["status"], invoice["subtotal"]) == ("draft", "1.52")
        exported = client.get("/v1/invoices/2026-11", params={"format": "csv"})
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert rows[-1]["kind"] == "amount_due" and rows[-1]["amount"] == "1.52"
        assert sum(float(r["amount"]) for r in rows if r["kind"] == "usage") == 1.52
        assert [i["period"] for i in client.get("/v1/invoices").json()["data"]] == ["2026-11"]


def test_marketplace_revenue_share_adds_up_to_the_cent_on_both_statements(
    clocked_served: tuple[Served, Clocked],
) -> None:
    served, clocked = clocked_served
    seller, buyer = served.tenant("seller"), served.tenant("buyer")
    llama = make_version(clocked.platform, seller.org_id, "llama")
    with served.client(seller.key) as client:
        listing = client.post(
            "/v1/marketplace/listings",
            json={"model": "llama:1", "components": [{"unit": "requests", "price": "0.333333"}]},
        )
        assert listing.status_code == 201, listing.text
        assert listing.json()["platform_share_percent"] == "20.00"
    with served.client(buyer.key) as client:
        assert [item["model"] for item in client.get("/v1/marketplace").json()["data"]] == [llama]
        taken = client.post(
            "/v1/marketplace/listings",
            json={"model": llama, "components": [{"unit": "requests", "price": "0.01"}]},
        )
        assert taken.status_code == 404 and taken.json()["error"]["param"] == "model"
    clocked.move_to(datetime(2026, 11, 25, tzinfo=UTC))
    for i in range(7):
        meter(
            clocked.platform,
            f"buy{i}",
            buyer.org_id,
            clocked.clock.now(),
            {"requests": 1},
            model=llama,
        )
    meter(clocked.platform, "own", seller.org_id, clocked.clock.now(), {"requests": 1}, model=llama)
    clocked.move_to(datetime(2026, 12, 1, tzinfo=UTC))
    with served.admin() as admin:
        assert len(admin.post("/v1/admin/invoices/finalize").json()["finalized"]) == 2
    with served.client(buyer.key) as client:
        bought = client.get("/v1/invoices/2026-11").json()
    with served.client(seller.key) as client:
        sold = client.get("/v1/invoices/2026-11").json()
        wallet = client.get("/v1/credits").json()
    assert [(line["model"], line["quantity"], line["amount"]) for line in bought["lines"]] == [
        (llama, 7, "2.33")  # 7 × 0.333333 = 2.333331
    ]
    assert sold["lines"] == [] or all(
        line["model"] != llama or line["amount"] == "0.00" for line in sold["lines"]
    )  # its own use is not a sale
    (sale,) = sold["marketplace_sales"]
    assert (sale["gross"], sale["platform_fee"], sale["net"]) == ("2.33", "0.47", "1.86")
    assert sale["buyer_invoice_id"] == bought["id"]
    assert sold["marketplace_net_credited"] == wallet["balance"] == "1.86"


def test_rate_limits_answer_429_with_honest_retry_after_and_headers(
    clocked_served: tuple[Served, Clocked],
) -> None:
    served, clocked = clocked_served
    platform = clocked.platform

    # A minimal metered route, as inference routes use the gate (test-only: no such product route).
    @billing_router.post("/test-only/metered", include_in_schema=False)
    def metered(
        request: Request, response: Response, principal: PrincipalDep, tokens: int = 0
    ) -> dict[str, bool]:
        admission = platform.gate.admit(
            principal.require_org(),
            principal.key_id,
            request.state.request_id,
            worst_case={"requests": 1, "input_tokens": tokens},
            headers=response.headers,
        )
        platform.gate.complete(admission, {"requests": 1, "input_tokens": tokens}).wait()
        return {"ok": True}

    acme = served.tenant("acme")
    try:
        from openmaas.api.app import create_app
        from tests.support.server import running_server

        with running_server(create_app(platform)) as url:
            with served.admin() as admin:
                limits = admin.put(
                    f"/v1/admin/organizations/{acme.org_id}/api_keys/{acme.key_id}/rate_limits",
                    json={"requests_per_minute": 3, "tokens_per_minute": 1000},
                )
                assert limits.status_code == 200, limits.text
            import httpx

            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {acme.key}"}) as client:
                first = client.post("/v1/test-only/metered", params={"tokens": 100})
                assert first.status_code == 200, first.text
                assert first.headers["x-ratelimit-limit-requests"] == "3"
                assert first.headers["x-ratelimit-remaining-requests"] == "2"
                assert first.headers["x-ratelimit-remaining-tokens"] == "900"
                assert first.headers["x-ratelimit-reset-tokens"] == "6s"
                too_many_tokens = client.post("/v1/test-only/metered", params={"tokens": 950})
                assert too_many_tokens.status_code == 429
                assert too_many_tokens.json()["error"]["type"] == "tokens"
                assert too_many_tokens.json()["error"]["code"] == "rate_limit_exceeded"
                assert client.post("/v1/test-only/metered").status_code == 200
                assert client.post("/v1/test-only/metered").status_code == 200
                refused = client.post("/v1/test-only/metered")
                assert refused.status_code == 429 and refused.json()["error"]["type"] == "requests"
                assert refused.headers["x-ratelimit-remaining-requests"] == "0"
                wait_s = int(refused.headers["retry-after"])
                clocked.clock.advance(wait_s - 0.5)
                assert client.post("/v1/test-only/metered").status_code == 429
                clocked.clock.advance(0.5)
                assert client.post("/v1/test-only/metered").status_code == 200
    finally:
        billing_router.routes[:] = [
            r for r in billing_router.routes if getattr(r, "path", "") != "/v1/test-only/metered"
        ]
