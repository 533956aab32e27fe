"""The registry's routes over HTTP: what a bad model name, alias or version number answers."""

from __future__ import annotations

from tests.integration.serving.predict_support import artifact, register
from tests.support.served import Served


def test_alias_routes_name_the_field_at_fault(served: Served) -> None:
    """Setting an alias on a model name no model can have answered 422 naming `version`, and a
    version number past 64 bits would reach the database (found by schemathesis)."""
    tenant = served.tenant("acme")
    register(served, tenant, artifact("tabular-classification"), "churn")
    with served.client(tenant.key) as client:
        missing = client.put("/v1/registry/models/%C2%9AQ/aliases/prod", json={"version": 1})
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "model", missing.text
        huge = client.put("/v1/registry/models/churn/aliases/prod", json={"version": 2**64})
        assert huge.status_code == 422 and huge.json()["error"]["param"] == "version", huge.text
        absent = client.put("/v1/registry/models/churn/aliases/prod", json={"version": 999_999_999})
        assert absent.status_code == 404 and absent.json()["error"]["param"] == "version", absent.text
        assert client.put("/v1/registry/models/churn/aliases/prod", json={"version": 1}).status_code == 200
        for ref in ["churn:99999999999999999999", "churn:²", "churn@1x"]:
            response = client.get(f"/v1/registry/versions/{ref}")
            assert response.status_code == 422, (ref, response.text)
