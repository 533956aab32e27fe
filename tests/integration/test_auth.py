"""Authentication and authorization over a real server: 401s, 403s, 404s across organisations,
revocation and expiry."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from openmaas.tenancy.tables import ApiKey
from tests.support.served import Served


def _assert_error(response, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    assert response.headers["x-request-id"]
    return error


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("Bearer", "malformed_api_key"),
        ("Basic dXNlcjpwYXNz", "malformed_api_key"),
        ("Bearer om-tooshort", "malformed_api_key"),
        ("Bearer om-" + "A" * 43, "invalid_api_key"),
    ],
)
def test_missing_malformed_and_unknown_keys_are_401(served: Served, header: str | None, code: str) -> None:
    headers = {"Authorization": header} if header else {}
    with served.client() as client:
        _assert_error(client.get("/v1/api_keys", headers=headers), 401, code)


def test_revoked_key_is_401_at_once_on_this_server(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        assert client.get("/v1/api_keys").status_code == 200
        spare = client.post("/v1/api_keys", json={"name": "spare"}).json()
        with served.client(spare["key"]) as spare_client:
            assert spare_client.get("/v1/me").status_code == 200  # now cached
            assert client.delete(f"/v1/api_keys/{spare['id']}").json()["revoked_at"] is not None
            _assert_error(spare_client.get("/v1/me"), 401, "invalid_api_key")


def test_revocation_elsewhere_takes_effect_within_the_cache_ttl(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        assert client.get("/v1/me").status_code == 200
        # Another server revokes it: only the database changes, this server's cache does not hear of it.
        with served.platform.db.session() as session:
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == tenant.key_id)
                .values(revoked_at=served.platform.clock.now())
            )
        time.sleep(served.platform.settings.auth_cache_ttl_s + 0.1)
        _assert_error(client.get("/v1/me"), 401)


def test_expired_key_is_401(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        short = client.post("/v1/api_keys", json={"name": "short", "expires_in": "2s"}).json()
    with served.client(short["key"]) as client:
        assert client.get("/v1/me").status_code == 200
        time.sleep(2.1)
        _assert_error(client.get("/v1/me"), 401, "expired_api_key")


def test_missing_scope_is_403(served: Served) -> None:
    tenant = served.tenant("acme", scopes=["inference"])
    with served.client(tenant.key) as client:
        error = _assert_error(client.get("/v1/api_keys"), 403, "insufficient_scope")
        assert "api_keys:read" in error["message"]
        _assert_error(client.get("/v1/audit_log"), 403)
        _assert_error(client.post("/v1/admin/organizations", json={"name": "evil"}), 403)


def test_keys_cannot_escalate_their_scopes(served: Served) -> None:
    tenant = served.tenant("acme", scopes=["api_keys:write", "models:read"])
    with served.client(tenant.key) as client:
        error = _assert_error(client.post("/v1/api_keys", json={"scopes": ["admin"]}), 403)
        assert error["param"] == "scopes"
        narrower = client.post("/v1/api_keys", json={"scopes": ["models:read"]})
        assert narrower.status_code == 201 and narrower.json()["scopes"] == ["models:read"]
        default = client.post("/v1/api_keys", json={})
        assert default.json()["scopes"] == ["api_keys:write", "models:read"]
        _assert_error(client.post("/v1/api_keys", json={"scopes": ["bogus"]}), 422)


def test_operator_key_cannot_call_tenant_routes(served: Served) -> None:
    with served.admin() as admin:
        _assert_error(admin.get("/v1/api_keys"), 403)
        _assert_error(admin.get("/v1/models"), 403)


def test_other_organisations_ids_are_404(served: Served) -> None:
    acme, globex = served.tenant("acme"), served.tenant("globex")
    with served.client(acme.key) as client:
        _assert_error(client.get(f"/v1/api_keys/{globex.key_id}"), 404, "not_found")
        _assert_error(client.delete(f"/v1/api_keys/{globex.key_id}"), 404)
        listed = client.get("/v1/api_keys").json()["data"]
        assert [k["id"] for k in listed] == [acme.key_id]
    with served.client(globex.key) as client:
        assert client.get("/v1/me").status_code == 200  # untouched by acme's attempt


def test_full_key_is_shown_only_at_creation(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        created = client.post("/v1/api_keys", json={"name": "once"}).json()
        assert created["key"].startswith("om-")
        listed = client.get("/v1/api_keys").json()["data"]
        fetched = client.get(f"/v1/api_keys/{created['id']}").json()
    assert all("key" not in item for item in listed)
    assert "key" not in fetched
    assert created["key"] not in str(listed) + str(fetched)


def test_keys_are_stored_only_as_hashes(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.platform.db.read_session() as session:
        stored = session.get(ApiKey, tenant.key_id)
        assert stored is not None
        assert tenant.key not in (stored.key_hash, stored.redacted)
        assert stored.key_hash == served.platform.hasher.digest(tenant.key)


def test_last_used_at_is_recorded(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        client.get("/v1/me")
        key = client.get(f"/v1/api_keys/{tenant.key_id}").json()
    assert key["last_used_at"] is not None


def test_key_lifetimes_past_what_a_date_holds_are_422(served: Served) -> None:
    """`expires_in: "99999999999d"` overflowed into a 500, `expires_at` took a number of seconds
    (found by schemathesis)."""
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        for body, param in [
            ({"expires_in": "99999999999d"}, "expires_in"),
            ({"expires_in": " 30d"}, "expires_in"),
            ({"expires_at": 1900000000}, "expires_at"),
            ({"expires_at": "1900000000"}, "expires_at"),
            ({"expires_at": "2090-01-01"}, "expires_at"),  # no time zone
        ]:
            error = _assert_error(client.post("/v1/api_keys", json={"name": "k", **body}), 422)
            assert error["param"] == param, body
        far = client.post("/v1/api_keys", json={"name": "k", "expires_in": "99999w"})
        assert far.status_code == 201, far.text
        latest = client.post("/v1/api_keys", json={"name": "k", "expires_at": "9999-12-31T23:59:59-05:00"})
        assert latest.status_code == 201, latest.text
        assert latest.json()["expires_at"].startswith("9000-01-01T00:00:00")  # the latest instant kept
