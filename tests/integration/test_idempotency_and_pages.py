"""Idempotent creates and cursor pagination."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.support.served import Served


def test_same_key_same_body_replays_the_stored_response(served: Served) -> None:
    with served.admin() as admin:
        headers = {"Idempotency-Key": "create-acme-1"}
        first = admin.post("/v1/admin/organizations", json={"name": "acme"}, headers=headers)
        second = admin.post("/v1/admin/organizations", json={"name": "acme"}, headers=headers)
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json()
        assert len(admin.get("/v1/admin/organizations").json()["data"]) == 1


def test_same_key_different_body_is_409(served: Served) -> None:
    with served.admin() as admin:
        headers = {"Idempotency-Key": "k-1"}
        assert (
            admin.post("/v1/admin/organizations", json={"name": "acme"}, headers=headers).status_code == 201
        )
        clash = admin.post("/v1/admin/organizations", json={"name": "globex"}, headers=headers)
        assert clash.status_code == 409
        assert clash.json()["error"]["code"] == "idempotency_key_reused"
        assert len(admin.get("/v1/admin/organizations").json()["data"]) == 1


def test_idempotent_key_creation_returns_the_same_key(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        headers = {"Idempotency-Key": "deploy-bot-key"}
        first = client.post("/v1/api_keys", json={"name": "bot"}, headers=headers).json()
        again = client.post("/v1/api_keys", json={"name": "bot"}, headers=headers).json()
        assert first["id"] == again["id"] and first["key"] == again["key"]
        assert len(client.get("/v1/api_keys").json()["data"]) == 2  # the tenant's own key and "bot"


def test_concurrent_retries_create_once(served: Served) -> None:
    def create(_: int) -> int:
        with served.admin() as admin:
            response = admin.post(
                "/v1/admin/organizations", json={"name": "raced"}, headers={"Idempotency-Key": "race"}
            )
            return response.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(create, range(8)))
    assert statuses == [201] * 8
    with served.admin() as admin:
        assert [o["name"] for o in admin.get("/v1/admin/organizations").json()["data"]] == ["raced"]


def test_failed_create_does_not_burn_the_idempotency_key(served: Served) -> None:
    with served.admin() as admin:
        admin.post("/v1/admin/organizations", json={"name": "taken"})
        headers = {"Idempotency-Key": "retry-me"}
        assert (
            admin.post("/v1/admin/organizations", json={"name": "taken"}, headers=headers).status_code == 409
        )
        retry = admin.post("/v1/admin/organizations", json={"name": "taken"}, headers=headers)
        assert retry.status_code == 409 and retry.json()["error"]["code"] == "conflict"


def test_pagination_walks_every_item_once(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        for i in range(24):
            assert client.post("/v1/api_keys", json={"name": f"k{i}"}).status_code == 201
        seen: list[str] = []
        after = None
        pages = 0
        while True:
            params = {"limit": 10, **({"after": after} if after else {})}
            page = client.get("/v1/api_keys", params=params).json()
            pages += 1
            seen += [item["id"] for item in page["data"]]
            assert page["last_id"] == (page["data"][-1]["id"] if page["data"] else None)
            if not page["has_more"]:
                break
            after = page["last_id"]
    assert pages == 3
    assert len(seen) == len(set(seen)) == 25
    assert seen == sorted(seen, reverse=True)  # newest first
