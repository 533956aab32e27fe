"""Marketplace listings sell only the publisher's own model versions, and say so when the version
is gone: another organisation's version or a missing one is a 404; a deleted one makes the listing
unavailable (hidden from the catalogue, refused with a clear error to a buyer)."""

from __future__ import annotations

import pytest

from openmaas import errors
from openmaas.billing import marketplace
from openmaas.registry import service as registry
from openmaas.schemas import billing as schemas
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_org, make_version
from tests.support.served import Served

_PRICE = [{"unit": "requests", "price": "0.02"}]


def test_publishing_needs_a_version_the_publisher_owns(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    acme, rival = served.tenant("acme"), served.tenant("rival")
    theirs = make_version(clocked.platform, rival.org_id, "secret")
    ours = make_version(clocked.platform, acme.org_id, "mine")
    with served.client(acme.key) as client:
        for model in (theirs, "secret:1", "mine:7", "nothing", "mv_doesnotexist"):
            refused = client.post("/v1/marketplace/listings", json={"model": model, "components": _PRICE})
            assert refused.status_code == 404, (model, refused.text)
            assert refused.json()["error"]["param"] == "model"
        bad = client.post("/v1/marketplace/listings", json={"model": "no spaces", "components": _PRICE})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "model"
        by_id = client.post("/v1/marketplace/listings", json={"model": ours, "components": _PRICE})
        by_ref = client.post("/v1/marketplace/listings", json={"model": "mine:1", "components": _PRICE})
        assert by_id.status_code == by_ref.status_code == 201
        assert by_id.json()["model"] == by_ref.json()["model"] == ours
        mine = client.get("/v1/marketplace/listings").json()["data"]
        # Re-publishing replaced the first listing: one live listing per version.
        assert sorted((item["id"], item["available"]) for item in mine) == sorted(
            [(by_id.json()["id"], False), (by_ref.json()["id"], True)]
        )
    with served.client(rival.key) as client:
        assert [item["id"] for item in client.get("/v1/marketplace").json()["data"]] == [by_ref.json()["id"]]
    with clocked.platform.db.read_session() as session:
        listing, version = marketplace.listed_version(session, by_ref.json()["id"])
        assert listing.owner_org_id == acme.org_id
        assert (version.id, version.org_id) == (ours, acme.org_id)
        with pytest.raises(errors.Conflict, match="withdrawn"):
            marketplace.listed_version(session, by_id.json()["id"])
        with pytest.raises(errors.NotFound):
            marketplace.listed_version(session, "lst_nope")


def test_an_imported_version_of_an_older_server_is_published_by_its_id(
    clocked_served: tuple[Served, Clocked],
) -> None:
    # Imports made their versions `ver_…` ids until one prefix, `mv_`, served every version.
    served, clocked = clocked_served
    acme = served.tenant("acme")
    legacy = make_version(clocked.platform, acme.org_id, "imported", prefix="ver_")
    with served.client(acme.key) as client:
        listed = client.post("/v1/marketplace/listings", json={"model": legacy, "components": _PRICE})
        assert listed.status_code == 201, listed.text
        assert listed.json()["model"] == legacy


def test_a_listing_whose_version_was_deleted_is_unavailable(clocked_served: tuple[Served, Clocked]) -> None:
    served, clocked = clocked_served
    acme, buyer = served.tenant("acme"), served.tenant("buyer")
    make_version(clocked.platform, acme.org_id, "gone")
    with served.client(acme.key) as client:
        listed = client.post("/v1/marketplace/listings", json={"model": "gone:1", "components": _PRICE})
        assert listed.status_code == 201
    with clocked.platform.db.session() as session, pytest.raises(errors.Conflict):
        # refused while the listing is live
        registry.delete_version(session, acme.org_id, "gone:1", clocked.platform.version_holders)
    with clocked.platform.db.session() as session:  # as a delete racing the publish would leave it
        session.delete(registry.resolve(session, acme.org_id, "gone:1")[1])
    with served.client(buyer.key) as client:
        assert client.get("/v1/marketplace").json()["data"] == []
    with served.client(acme.key) as client:
        (mine,) = client.get("/v1/marketplace/listings").json()["data"]
        assert (mine["id"], mine["available"], mine["withdrawn_at"]) == (listed.json()["id"], False, None)
    with clocked.platform.db.read_session() as session, pytest.raises(errors.Conflict) as refused:
        marketplace.listed_version(session, listed.json()["id"])
    assert refused.value.code == "listing_unavailable" and "deleted" in str(refused.value)


def test_a_buyer_deploys_a_live_listing_and_nothing_else_of_the_seller(clocked: Clocked) -> None:
    platform = clocked.platform
    seller, buyer = make_org(platform, "seller"), make_org(platform, "buyer")
    sold = make_version(platform, seller, "sold")
    make_version(platform, seller, "private")
    with platform.db.session() as session:
        body = schemas.ListingCreate.model_validate({"model": "sold:1", "components": _PRICE})
        listing = marketplace.publish(
            session, seller, body, platform_share_bps=2_000, currency="USD", now=platform.clock.now()
        )
        listing_id = listing.id
    with platform.db.read_session() as session:
        model, version = marketplace.deployable_version(session, buyer, listing_id)
        assert (model.name, version.id, version.org_id) == ("sold", sold, seller)
        for ref in ("private:1", "sold:1", sold):  # the seller's registry stays the seller's
            with pytest.raises(errors.NotFound):
                marketplace.deployable_version(session, buyer, ref)
        assert marketplace.deployable_version(session, seller, "private:1")[0].name == "private"
    with platform.db.session() as session:
        marketplace.withdraw(session, seller, listing_id, platform.clock.now())
    with platform.db.read_session() as session, pytest.raises(errors.Conflict) as refused:
        marketplace.deployable_version(session, buyer, listing_id)
    assert refused.value.code == "listing_unavailable"
