"""The audit log records each mutating call; operators see all of it, a tenant admin its own."""

from __future__ import annotations

from tests.support.served import Served


def test_each_mutating_call_is_audited_with_actor_target_and_outcome(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        created = client.post(
            "/v1/api_keys", json={"name": "ci"}, headers={"x-request-id": "req-create-ci"}
        ).json()
        client.delete(f"/v1/api_keys/{created['id']}", headers={"x-request-id": "req-revoke-ci"})
        client.post("/v1/api_keys", json={"scopes": ["nope"]}, headers={"x-request-id": "req-bad"})
        client.get("/v1/api_keys")  # reads are not audited
        entries = client.get("/v1/audit_log").json()["data"]
    by_request = {entry["request_id"]: entry for entry in entries}
    create = by_request["req-create-ci"]
    assert (create["action"], create["target_id"], create["outcome"]) == (
        "api_keys.create",
        created["id"],
        "success",
    )
    assert create["actor_key_id"] == tenant.key_id and create["organization_id"] == tenant.org_id
    revoke = by_request["req-revoke-ci"]
    assert (revoke["action"], revoke["target_id"], revoke["status_code"]) == (
        "api_keys.revoke",
        created["id"],
        200,
    )
    failed = by_request["req-bad"]
    assert (failed["outcome"], failed["status_code"], failed["error_code"]) == (
        "failure",
        422,
        "invalid_value",
    )
    # The operator's creation of the tenant's key shows in the tenant's log too.
    assert any(e["action"] == "organizations.api_keys.create" for e in entries)
    assert not any(e["method"] == "GET" for e in entries)


def test_tenants_see_only_their_own_entries_and_operators_see_all(served: Served) -> None:
    acme, globex = served.tenant("acme"), served.tenant("globex")
    for tenant in (acme, globex):
        with served.client(tenant.key) as client:
            client.post("/v1/api_keys", json={"name": "x"})
    with served.client(acme.key) as client:
        mine = client.get("/v1/audit_log").json()["data"]
    assert mine and {e["organization_id"] for e in mine} == {acme.org_id}
    with served.admin() as admin:
        everything = admin.get("/v1/admin/audit_log", params={"limit": 100}).json()["data"]
        only_globex = admin.get("/v1/admin/audit_log", params={"organization_id": globex.org_id}).json()[
            "data"
        ]
    assert {acme.org_id, globex.org_id} <= {e["organization_id"] for e in everything}
    assert any(e["action"] == "organizations.create" for e in everything)
    assert only_globex and {e["organization_id"] for e in only_globex} == {globex.org_id}


def test_audit_needs_an_admin_or_audit_scope(served: Served) -> None:
    tenant = served.tenant("acme", scopes=["api_keys:write"])
    with served.client(tenant.key) as client:
        assert client.get("/v1/audit_log").status_code == 403


def test_unauthenticated_attempts_do_not_fill_the_log(served: Served) -> None:
    with served.client("om-" + "x" * 43) as client:
        for _ in range(5):
            assert client.post("/v1/api_keys", json={}).status_code == 401
    with served.admin() as admin:
        assert admin.get("/v1/admin/audit_log").json()["data"] == []
