"""A buyer deploys another organisation's model through its marketplace listing and calls it;
its usage is priced by the listing; the seller keeps its model otherwise private."""

from __future__ import annotations

from decimal import Decimal

from openmaas import Client
from tests.integration.serving.predict_support import artifact, register
from tests.support.served import Served

ROW = {"age": 75.0, "plan": "basic", "noise": 0.3}


def test_a_buyer_deploys_a_listing_and_pays_its_price(served: Served) -> None:
    seller, buyer = served.tenant("seller"), served.tenant("buyer")
    register(served, seller, artifact("tabular-classification"), "churn")
    with served.client(seller.key) as http:
        listing = http.post(
            "/v1/marketplace/listings",
            json={"model": "churn:1", "components": [{"unit": "requests", "price": "0.25"}]},
        )
        assert listing.status_code == 201, listing.text
    listing_id, version_id = listing.json()["id"], listing.json()["model"]
    with served.client(buyer.key) as http:
        own_name = http.post("/v1/deployments", json={"model": "churn:1", "name": "x"})
        assert own_name.status_code == 404  # the seller's registry stays private
        by_id = http.post("/v1/deployments", json={"model": version_id, "name": "x"})
        assert by_id.status_code == 404
    with Client(served.url, buyer.key) as client:
        client.deployments.create(listing_id, name="bought")
        client.deployments.wait_ready("bought", timeout=60)
        answers = [client.deployments.predict("bought", [ROW]) for _ in range(3)]
    assert all(a.version_id == version_id and a.predictions[0]["label"] == "yes" for a in answers)
    with served.client(buyer.key) as http:
        report = http.get("/v1/usage", params={"granularity": "event"}).json()
        costs = {e["request_id"]: e["cost"] for e in report["data"] if e["unit"] == "requests"}
        assert len(costs) == 3 and {Decimal(c) for c in costs.values()} == {Decimal("0.25")}
    with served.client(seller.key) as http:
        withdrawn = http.delete(f"/v1/marketplace/listings/{listing_id}")
        assert withdrawn.status_code == 200, withdrawn.text
    with served.client(buyer.key) as http:
        again = http.post("/v1/deployments", json={"model": listing_id, "name": "again"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "listing_unavailable"
