"""Deleting a model version (or a whole model) that something uses is refused over HTTP — a live
marketplace listing, a deployment serving it, a deployment's traffic split, a buyer's deployment —
with a 409 naming the user and nothing deleted; once the listing is withdrawn or the deployment
deleted, it goes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from openmaas import Client
from tests.integration.serving.predict_support import artifact, register
from tests.support.served import Served, Tenant


def _refused(http: httpx.Client, ref: str) -> dict[str, Any]:
    response = http.delete(f"/v1/registry/versions/{ref}")
    assert response.status_code == 409, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "version_in_use" and error["param"] == "model"
    assert error["type"] == "conflict_error"
    assert http.get(f"/v1/registry/versions/{ref}").status_code == 200  # nothing deleted
    return error


def _folder(served: Served, tenant: Tenant, http: httpx.Client, ref: str) -> Path:
    version_id = http.get(f"/v1/registry/versions/{ref}").json()["id"]
    return served.platform.store.path(served.platform.store.model_dir(tenant.org_id, version_id))


def _deleted(http: httpx.Client, ref: str, folder: Path) -> None:
    response = http.delete(f"/v1/registry/versions/{ref}")
    assert response.status_code == 200, response.text
    assert response.json()["ref"] == ref
    assert http.get(f"/v1/registry/versions/{ref}").status_code == 404
    assert not folder.exists()


def test_versions_in_use_are_refused_until_their_users_are_gone(served: Served) -> None:
    acme = served.tenant("acme")
    listed, deployed, canary = (
        register(served, acme, artifact("tabular-classification"), "churn") for _ in range(3)
    )
    with served.client(acme.key) as http, Client(served.url, acme.key) as client:
        folders = {ref: _folder(served, acme, http, ref) for ref in (listed, deployed, canary)}
        listing = http.post(
            "/v1/marketplace/listings",
            json={"model": listed, "components": [{"unit": "requests", "price": "0.01"}]},
        )
        assert listing.status_code == 201, listing.text
        listing_id = listing.json()["id"]
        assert _refused(http, listed)["message"] == (
            f"{listed} is in use: listed on the marketplace as {listing_id}. Move the aliases, withdraw "
            "the listings and delete or repoint the deployments first."
        )

        client.deployments.create(deployed, name="api")
        client.deployments.wait_ready("api", timeout=60)
        assert "'api'" in _refused(http, deployed)["message"]
        split = [{"version": deployed, "weight": 80}, {"version": canary, "weight": 20}]
        assert http.patch("/v1/deployments/api", json={"traffic": split}).status_code == 200
        client.deployments.wait_ready("api", timeout=60)
        message = _refused(http, canary)["message"]
        assert message.startswith(f"{canary} is in use: in the traffic split of deployment(s) 'api'. ")

        client.deployments.stop("api")  # a stopped deployment can be started again: still a user
        assert "'api'" in _refused(http, deployed)["message"]
        assert all(folder.is_dir() for folder in folders.values())

        assert http.delete(f"/v1/marketplace/listings/{listing_id}").status_code == 200
        _deleted(http, listed, folders[listed])
        assert http.delete("/v1/deployments/api").status_code == 200
        _deleted(http, canary, folders[canary])
        _deleted(http, deployed, folders[deployed])


def test_a_buyers_deployment_keeps_a_withdrawn_listings_version_without_being_named(served: Served) -> None:
    seller, buyer = served.tenant("seller"), served.tenant("buyer")
    ref = register(served, seller, artifact("tabular-classification"), "churn")
    with served.client(seller.key) as http:
        listing = http.post(
            "/v1/marketplace/listings",
            json={"model": ref, "components": [{"unit": "requests", "price": "0.01"}]},
        ).json()
    with served.client(buyer.key) as http:
        bought = http.post("/v1/deployments", json={"model": listing["id"], "name": "secret-buyer-api"})
        assert bought.status_code == 201, bought.text
    with served.client(seller.key) as http:
        folder = _folder(served, seller, http, ref)
        assert http.delete(f"/v1/marketplace/listings/{listing['id']}").status_code == 200
        message = _refused(http, ref)["message"]
        assert "buyer deployment" in message and "secret-buyer-api" not in message
    with served.client(buyer.key) as http:
        assert http.delete("/v1/deployments/secret-buyer-api").status_code == 200
    with served.client(seller.key) as http:
        _deleted(http, ref, folder)


def test_a_model_goes_with_its_versions_and_aliases_once_no_deployment_uses_one(served: Served) -> None:
    acme = served.tenant("acme")
    refs = [register(served, acme, artifact("tabular-classification"), "churn") for _ in range(2)]
    with served.client(acme.key) as http:
        folders = [_folder(served, acme, http, ref) for ref in refs]
        assert (
            http.put("/v1/registry/models/churn/aliases/production", json={"version": 1}).status_code == 200
        )
        assert http.post("/v1/deployments", json={"model": refs[1], "name": "api"}).status_code == 201
        refused = http.delete("/v1/registry/models/churn")
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert (
            error["code"] == "version_in_use" and refs[1] in error["message"] and "'api'" in error["message"]
        )
        assert "production" not in error["message"]  # the model's own aliases go with it
        assert http.get("/v1/registry/models/churn").json()["latest_version"] == 2
        assert all(folder.is_dir() for folder in folders)

        assert http.delete("/v1/deployments/api").status_code == 200
        deleted = http.delete("/v1/registry/models/churn")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["name"] == "churn" and deleted.json()["aliases"] == {"production": 1}
        assert http.get("/v1/registry/models/churn").status_code == 404
        assert http.get(f"/v1/registry/versions/{refs[0]}").status_code == 404
        assert not any(folder.exists() for folder in folders)
        assert http.delete("/v1/registry/models/churn").status_code == 404
