"""Every error, everywhere, has the one JSON shape and the right status."""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import urlparse

from openmaas.api.app import create_app
from openmaas.bootstrap import Platform
from tests.support.served import Served
from tests.support.server import running_server


def _error(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["error"]


def test_unknown_route_and_wrong_method(served: Served) -> None:
    with served.client() as client:
        assert _error(client.get("/v1/nowhere"), 404)["code"] == "unknown_route"
        assert _error(client.delete("/healthz"), 405)["type"] == "invalid_request_error"


def test_wrong_method_lists_every_method_of_the_path_in_allow(served: Served) -> None:
    """FastAPI keeps one route per method: the 405 named only the first one's (found by schemathesis)."""
    with served.admin() as admin:
        keys = admin.request("OPTIONS", "/v1/api_keys")
        assert _error(keys, 405)["code"] == "method_not_allowed"
        assert keys.headers["allow"] == "GET, POST"
        version = admin.put("/v1/registry/versions/churn:1")
        assert _error(version, 405) and version.headers["allow"] == "DELETE, GET, PATCH"


def test_invalid_json_is_400(served: Served) -> None:
    with served.admin() as admin:
        error = _error(
            admin.post(
                "/v1/admin/organizations", content=b'{"name": ', headers={"content-type": "application/json"}
            ),
            400,
        )
    assert error["code"] == "invalid_json"


def test_wrong_field_types_are_422_naming_the_field(served: Served) -> None:
    with served.admin() as admin:
        assert _error(admin.post("/v1/admin/organizations", json={"name": 12}), 422)["param"] == "name"
        assert _error(admin.post("/v1/admin/organizations", json={}), 422)["code"] == "missing_field"
        assert _error(admin.post("/v1/admin/organizations", json={"name": "../x"}), 422)["param"] == "name"
        unknown = _error(admin.post("/v1/admin/organizations", json={"name": "ok", "colour": "red"}), 422)
        assert unknown["param"] == "colour"
        org = admin.post("/v1/admin/organizations", json={"name": "acme"}).json()
        bad_expiry = admin.post(f"/v1/admin/organizations/{org['id']}/api_keys", json={"expires_in": "soon"})
        assert _error(bad_expiry, 422)["param"] == "expires_in"
        past = admin.post(
            f"/v1/admin/organizations/{org['id']}/api_keys", json={"expires_at": "2001-01-01T00:00:00Z"}
        )
        assert _error(past, 422)["param"] == "expires_at"
        assert _error(admin.get("/v1/admin/organizations?limit=0"), 422)["param"] == "limit"


def test_non_json_body_is_415(served: Served) -> None:
    with served.admin() as admin:
        response = admin.post(
            "/v1/admin/organizations", content=b"name=acme", headers={"content-type": "text/plain"}
        )
    assert _error(response, 415)["code"] == "unsupported_media_type"


def test_body_over_the_limit_is_413_by_length_and_when_chunked(served: Served) -> None:
    limit = served.platform.settings.max_body_bytes
    big = b'{"name": "' + b"x" * limit + b'"}'
    with served.admin() as admin:
        assert _error(
            admin.post("/v1/admin/organizations", content=big, headers={"content-type": "application/json"}),
            413,
        )

        def chunks():  # type: ignore[no-untyped-def]
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        chunked = admin.post(
            "/v1/admin/organizations", content=chunks(), headers={"content-type": "application/json"}
        )
        assert _error(chunked, 413)["code"] == "payload_too_large"
        assert admin.get("/v1/admin/organizations").json()["data"] == []  # nothing half-written


def test_duplicate_name_is_409(served: Served) -> None:
    with served.admin() as admin:
        assert admin.post("/v1/admin/organizations", json={"name": "acme"}).status_code == 201
        assert _error(admin.post("/v1/admin/organizations", json={"name": "acme"}), 409)["param"] == "name"


def test_request_id_is_echoed_or_generated(served: Served) -> None:
    with served.client() as client:
        assert (
            client.get("/healthz", headers={"x-request-id": "trace-123"}).headers["x-request-id"]
            == "trace-123"
        )
        generated = client.get("/v1/nowhere").headers["x-request-id"]
        assert generated.startswith("req_")
        assert (
            client.get("/healthz", headers={"x-request-id": "bad id\t!"}).headers["x-request-id"]
            != "bad id\t!"
        )


def test_uncaught_exceptions_are_500_in_the_error_shape(platform: Platform) -> None:
    app = create_app(platform)

    async def explode() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/boom", explode)
    with running_server(app) as url:
        parsed = urlparse(url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        connection.request("GET", "/boom")
        response = connection.getresponse()
        body = response.read().decode()
        assert response.status == 500
        assert response.getheader("x-request-id")
        assert '"type":"server_error"' in body and "secret internals" not in body


def test_the_openapi_document_declares_the_errors_in_our_shape(served: Served) -> None:
    """Routes documented only FastAPI's `{"detail": [...]}` 422 and no other error, nor the bearer key
    they take (found by schemathesis: every 401, 403, 404, 409 answer was undocumented)."""
    with served.client() as client:
        document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key, `om-…`",
    }
    assert document["security"] == [{"apiKey": []}]
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            keyless = operation.get("security") == []
            assert keyless == (path in ("/healthz", "/readyz", "/metrics")), (method, path)
            names_a_thing = "{" in path and path != "/v1/invoices/{period}"  # any month has a statement
            for status in ([] if keyless else ["401", "503"]) + (["404"] if names_a_thing else []):
                assert status in responses, (method, path, status)
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"] == error_body, (method, path)
    predict = document["paths"]["/v1/deployments/{deployment}/predict"]["post"]["responses"]
    assert predict["429"]["headers"]["Retry-After"]["required"] is True


def test_the_openapi_document_states_what_the_routes_refuse(served: Served) -> None:
    """Requests valid per the document were refused with 422 (found by schemathesis'
    positive_data_acceptance): the document now states the patterns, enums and bounds the server
    checks, from the same constants."""
    with served.client() as client:
        document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]

    def field(model: str, name: str) -> dict[str, Any]:
        return schemas[model]["properties"][name]  # type: ignore[no-any-return]

    assert "Europe/Berlin" in field("OrganizationCreate", "timezone")["enum"]
    assert field("OrganizationCreate", "name")["pattern"].startswith("^[A-Za-z0-9]")
    assert field("CreditTopUp", "amount")["pattern"].startswith("^(?!0*")
    assert "tabular-regression" in field("TrainingJobCreate", "task")["enum"]
    assert "prune-" in field("OptimizationCreate", "method")["pattern"]
    assert field("DeploymentCreate", "model")["pattern"] == field("ListingCreate", "model")["pattern"]
    assert "models:read" in field("ApiKeyCreate", "scopes")["anyOf"][0]["items"]["enum"]
    assert field("TagsUpdate", "tags")["propertyNames"]["pattern"]
    period = document["paths"]["/v1/invoices/{period}"]["get"]["parameters"][0]
    assert period["schema"]["pattern"] == "^([1-8][0-9]{3})-(0[1-9]|1[0-2])$"
    kind = document["paths"]["/v1/jobs"]["get"]["parameters"][0]  # the gateway refuses NUL in URLs
    assert kind["name"] == "kind" and kind["schema"]["anyOf"][0]["pattern"] == "^[^\\x00]*$"


def test_numbers_and_booleans_in_bodies_are_json_numbers_and_booleans(served: Served) -> None:
    """Pydantic's lax mode took `"5"` and `true` for numbers and `0` or `"yes"` for booleans, which
    the document refuses (found by schemathesis); an integer may still come as `2.0`."""
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        for body, param in [
            ({"model": "m", "max_wait_ms": "5"}, "max_wait_ms"),
            ({"model": "m", "replicas": True}, "replicas"),
            ({"model": "m", "replicas": "2"}, "replicas"),
        ]:
            response = client.post("/v1/deployments", json=body)
            assert response.status_code == 422 and response.json()["error"]["param"] == param, body
        forced = client.post(
            "/v1/optimizations", json={"model": "m:1", "method": "onnx-fp32", "force": "yes"}
        )
        assert forced.status_code == 422 and forced.json()["error"]["param"] == "force"
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "1"}
        refused = client.post("/v1/chat/completions", json=chat)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "temperature"
        whole = client.post("/v1/deployments", json={"model": "m", "replicas": 2.0})
        assert whole.status_code == 404 and whole.json()["error"]["param"] == "model"  # past validation
    with served.admin() as admin:
        org = tenant.org_id
        prepaid = admin.patch(f"/v1/admin/organizations/{org}/billing", json={"prepaid": 0})
        assert prepaid.status_code == 422 and prepaid.json()["error"]["param"] == "prepaid"
