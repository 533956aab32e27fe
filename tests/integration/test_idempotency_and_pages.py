"""Idempotent creates and cursor pagination."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.serving.predict_support import artifact, register
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


# Integers past 64 bits are valid JSON; orjson, which wrote the idempotency fingerprint, refused
# them and every create answered 500 (issue 15, item 2).
BIG = 18446744073709551616  # 2**64
BIG_NEGATIVE = -358365313929167241216


def _error(response: httpx.Response) -> tuple[int, str | None, str | None]:
    error = response.json().get("error") or {}
    return response.status_code, error.get("param"), error.get("code")


@pytest.mark.parametrize("idempotency_key", [None, "big-1"])
def test_big_integers_in_free_form_fields_get_the_error_of_any_bad_value(
    served: Served, idempotency_key: str | None
) -> None:
    tenant = served.tenant("acme")
    ref = register(served, tenant, artifact("tabular-classification"), "bc")
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    training = {"task": "tabular-classification", "dataset": "ds_missing"}
    cases = [  # (path, body, free-form field, its big value, a small value as wrong)
        ("/v1/deployments", {"model": ref}, "engine", {"x": [BIG_NEGATIVE]}, {"x": [1]}),
        ("/v1/training_jobs", training, "params", {"epochs": BIG}, {"epochs": 10**6}),
        ("/v1/training_jobs", training, "preprocessing", {"x": BIG}, {"x": 1}),
    ]
    with served.client(tenant.key) as client:
        for path, body, field, big, small in cases:
            expected = _error(client.post(path, json={**body, field: small}))
            assert expected[0] == 422, expected
            got = client.post(path, json={**body, field: big}, headers=headers)
            assert _error(got) == expected, got.text
        assert client.get("/v1/deployments").json()["data"] == []


def test_big_integers_in_free_form_fields_are_stored_and_replayed_faithfully(served: Served) -> None:
    book = {"plan": "big", "components": [{"unit": "requests", "price": "0.01", "included": BIG}]}
    headers = {"Idempotency-Key": "book-1"}
    with served.admin() as admin:
        first = admin.post("/v1/admin/pricebooks", json=book, headers=headers)
        assert first.status_code == 201, first.text
        assert first.json()["components"][0]["included"] == BIG
        again = admin.post("/v1/admin/pricebooks", json=book, headers=headers)
        assert again.status_code == 201 and again.json() == first.json()
        other = {**book, "components": [{**book["components"][0], "included": BIG + 1}]}
        clash = admin.post("/v1/admin/pricebooks", json=other, headers=headers)
        assert _error(clash) == (409, "Idempotency-Key", "idempotency_key_reused")


def test_rate_limits_past_what_is_stored_are_refused_naming_the_field(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.admin() as admin:
        for value in (2**31, BIG):
            book = admin.post("/v1/admin/pricebooks", json={"plan": "fast", "requests_per_minute": value})
            assert _error(book)[:2] == (422, "requests_per_minute"), book.text
            limits = admin.put(
                f"/v1/admin/organizations/{tenant.org_id}/rate_limits", json={"tokens_per_minute": value}
            )
            assert _error(limits)[:2] == (422, "tokens_per_minute"), limits.text
        assert admin.get("/v1/admin/pricebooks").json()["data"] == []
