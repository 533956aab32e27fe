"""The route dependencies of `api/deps`: a route's transaction (`SessionDep`) is rolled back when
the route raises, with the same error response as before; the organisation an operator route names
(`TargetOrg`) is looked up for the operator only, by id or name, 404 when there is none."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from openmaas import errors
from openmaas.api.app import create_app
from openmaas.api.deps import SessionDep
from openmaas.bootstrap import Platform
from openmaas.schemas.tenancy import OrganizationCreate
from openmaas.tenancy import service as tenancy
from openmaas.tenancy.tables import Organization
from tests.support.served import Served
from tests.support.server import running_server


def _organization_names(platform: Platform) -> list[str]:
    with platform.db.read_session() as session:
        return list(session.scalars(select(Organization.name)))


@pytest.mark.parametrize(
    ("raised", "status"),
    [(errors.Conflict("Taken.", param="name", code="taken"), 409), (RuntimeError("internals"), 500)],
)
def test_a_route_that_raises_rolls_back_its_transaction_and_answers_as_without_it(
    platform: Platform, raised: Exception, status: int
) -> None:
    app = create_app(platform)

    def with_session(session: SessionDep) -> None:
        tenancy.create_organization(session, OrganizationCreate(name="half-done"), platform.clock.now())
        session.flush()  # written, not yet committed
        raise raised

    def without_session() -> None:
        raise raised

    app.add_api_route("/with-session", with_session, methods=["POST"])
    app.add_api_route("/without-session", without_session, methods=["POST"])
    with running_server(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        answer = client.post("/with-session")
        plain = client.post("/without-session")
    assert answer.status_code == plain.status_code == status
    assert answer.json() == plain.json()
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert "internals" not in answer.text
    assert _organization_names(platform) == []  # rolled back


def test_a_route_that_returns_commits_before_answering(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        job = client.post("/v1/jobs/job_nothing/cancel")
        assert job.status_code == 404 and job.json()["error"]["param"] == "job_id"
    with served.admin() as admin:
        finalized = admin.post("/v1/admin/invoices/finalize")
        assert finalized.status_code == 200 and finalized.json() == {"finalized": []}


def test_operator_routes_find_the_named_organisation_by_id_or_name(served: Served) -> None:
    acme = served.tenant("acme")
    with served.admin() as admin:
        by_id = admin.get(f"/v1/admin/organizations/{acme.org_id}/credits")
        by_name = admin.get("/v1/admin/organizations/acme/credits")
        assert by_id.status_code == by_name.status_code == 200 and by_id.json() == by_name.json()
        topped = admin.post("/v1/admin/organizations/acme/credits", json={"amount": "5.00"})
        assert topped.status_code == 201, topped.text
        keys = admin.get("/v1/admin/organizations/acme/api_keys").json()["data"]
        assert [key["id"] for key in keys] == [acme.key_id]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/credits", None),
        ("POST", "/credits", {"amount": "5.00"}),
        ("PATCH", "/billing", {"prepaid": True}),
        ("PUT", "/api_keys/key_nothing/budget", {"monthly_cap": "1.00"}),
        ("PUT", "/rate_limits", {"requests_per_minute": 10}),
        ("GET", "/api_keys", None),
        ("POST", "/api_keys", {"name": "k"}),
        ("DELETE", "/api_keys/key_nothing", None),
        ("GET", "/invoices/2026-01", None),
    ],
)
def test_a_missing_organisation_is_404_for_the_operator_and_403_for_anyone_else(
    served: Served, method: str, path: str, body: dict[str, object] | None
) -> None:
    acme = served.tenant("acme", scopes=["admin"])
    url = f"/v1/admin/organizations/org_nothing{path}"
    with served.admin() as admin:
        missing = admin.request(method, url, json=body)
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"]["code"] == "not_found"
    assert missing.json()["error"]["param"] == "organization"
    with served.client(acme.key) as tenant:
        # Not the operator: refused before any lookup, so it cannot tell which organisations exist.
        for org in ("org_nothing", acme.org_id):
            refused = tenant.request(method, f"/v1/admin/organizations/{org}{path}", json=body)
            assert refused.status_code == 403, refused.text
