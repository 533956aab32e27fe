"""Names and ids a client should never send: control characters in names (refused naming the
field), NUL in a path segment or a query parameter (PostgreSQL cannot hold it: refused before any
lookup, on every database alike), ids too long or with control characters, and other
organisations' ids (404, never theirs)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from openmaas import Client
from tests.integration.hostile.wire import error_of
from tests.integration.serving.predict_support import artifact, register
from tests.support.leftovers import nothing_left
from tests.support.served import Served, Tenant

BAD_NAMES = ["ci\x00", "ci\n", "line\nbreak", "tab\there", "bell\x07", "del\x7f", "c1\x85"]


def _error(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def _upload(client: httpx.Client, **params: str) -> httpx.Response:
    return client.post(
        "/v1/datasets",
        params=params,
        content=b"a,b\n1,2\n",
        headers={"content-type": "application/octet-stream"},
    )


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_with_control_characters_are_refused_naming_the_field(
    served: Served, tenant: Tenant, name: str
) -> None:
    with nothing_left(served.platform), served.admin() as admin, served.client(tenant.key) as client:
        assert _error(admin.post("/v1/admin/organizations", json={"name": name}))["param"] == "name"
        assert (
            _error(admin.post("/v1/admin/organizations", json={"name": "o", "plan": name}))["param"] == "plan"
        )
        keys = f"/v1/admin/organizations/{tenant.org_id}/api_keys"
        assert _error(admin.post(keys, json={"name": name}))["param"] == "name"
        for field in ("model", "resource_class"):
            component = {"unit": "requests", "price": "1", field: name}
            pricebook = admin.post("/v1/admin/pricebooks", json={"plan": "p", "components": [component]})
            assert _error(pricebook)["param"] == f"components.0.{field}"
        assert _error(client.post("/v1/api_keys", json={"name": name}))["param"] == "name"
        assert [k["name"] for k in client.get("/v1/api_keys").json()["data"]] == ["test"]
        deployment = client.post("/v1/deployments", json={"model": "m", "name": name})
        assert _error(deployment)["param"] == "name"
        assert _error(_upload(client, name=name))["param"] == "name"
        for field in ("filename", "target"):
            assert _error(_upload(client, name="d", **{field: name}))["param"] == field
        assert client.get("/v1/datasets").json()["data"] == []
        imported = client.post(
            "/v1/registry/imports",
            params={"name": name},
            content=b"PK",
            headers={"content-type": "application/zip"},
        )
        assert _error(imported)["param"] == "name"
        training = client.post(
            "/v1/training_jobs", json={"task": "tabular-classification", "dataset": "d", "model": name}
        )
        assert _error(training)["param"] == "model"
        training = client.post(
            "/v1/training_jobs", json={"task": "tabular-classification", "dataset": "d", "target": name}
        )
        assert _error(training)["param"] == "target"
        for tags in ({name: "v"}, {"k": name}):
            assert _error(client.patch("/v1/registry/versions/m:1", json={"tags": tags}))["param"] == "tags"


# PostgreSQL refuses NUL in text: these answered 500 there (and 404 on SQLite).
NUL_IN_PATHS = [
    ("GET", "/v1/datasets/d%00", "ref"),
    ("GET", "/v1/jobs/job_%00", "job_id"),
    ("GET", "/v1/jobs/job_%00/events", "job_id"),
    ("POST", "/v1/jobs/job_%00/cancel", "job_id"),
    ("GET", "/v1/training_jobs/job_%00", "job_id"),
    ("GET", "/v1/optimizations/job_%00", "job_id"),
    ("GET", "/v1/registry/models/m%00", "name"),
    ("PUT", "/v1/registry/models/m/aliases/a%00", "alias"),
    ("GET", "/v1/registry/versions/mv_%00", "ref"),
    ("GET", "/v1/deployments/d%00", "deployment"),
    ("POST", "/v1/deployments/d%00/predict", "deployment"),
    ("POST", "/v1/deployments/d%00/explain", "deployment"),
    ("GET", "/v1/api_keys/key_%00", "key_id"),
    ("DELETE", "/v1/api_keys/key_%00", "key_id"),
    ("GET", "/v1/no_such_route/%00", "path"),
]
NUL_IN_QUERIES = [
    ("/v1/datasets?name=d%00", "name"),
    ("/v1/datasets?limit=2&after=ds_%00", "after"),
    ("/v1/jobs?after=job_%00", "after"),
    ("/v1/registry/models?after=%00", "after"),
    ("/v1/usage?model=m%00", "model"),
    ("/v1/usage?api_key_id=key_%00", "api_key_id"),
    ("/v1/datasets?na%00me=d", "query"),
]
_BODIES: dict[str, Any] = {"predict": {"inputs": [1]}, "explain": {"inputs": [1]}, "aliases": {"version": 1}}


@pytest.mark.parametrize(("method", "path", "param"), NUL_IN_PATHS, ids=[p for _, p, _ in NUL_IN_PATHS])
def test_nul_in_a_path_segment_is_refused_naming_it(
    served: Served, api: httpx.Client, method: str, path: str, param: str
) -> None:
    body = next((b for word, b in _BODIES.items() if word in path), {}) if method != "GET" else None
    with nothing_left(served.platform):
        refused = api.request(method, path, json=body)
    assert error_of(refused) == (422, "invalid_value", param), refused.text
    assert "NUL" in refused.json()["error"]["message"]


@pytest.mark.parametrize(("path", "param"), NUL_IN_QUERIES, ids=[p for p, _ in NUL_IN_QUERIES])
def test_nul_in_a_query_parameter_is_refused_naming_it(
    served: Served, api: httpx.Client, path: str, param: str
) -> None:
    with nothing_left(served.platform):
        refused = api.get(path)
        assert error_of(refused) == (422, "invalid_value", param), refused.text
        if path.startswith("/v1/datasets?"):  # an upload, refused before its body is read
            upload = api.post(path.replace("?", "?filename=d.csv&"), content=b"a\n1\n")
            assert error_of(upload) == (422, "invalid_value", param), upload.text


def test_nul_in_an_openai_model_name_is_refused_naming_model(served: Served, api: httpx.Client) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with nothing_left(served.platform):
        for path, body in (
            ("/v1/chat/completions", {"messages": messages}),
            ("/v1/completions", {"prompt": "hi"}),
            ("/v1/embeddings", {"input": "hi"}),
        ):
            for model in ("chat\x00", "chat\x1b[2J", "m" * 1000):
                refused = api.post(path, json={**body, "model": model})
                assert error_of(refused) == (400, "invalid_value", "model"), refused.text


def test_long_ids_and_ids_with_control_characters_are_not_found(served: Served, api: httpx.Client) -> None:
    with nothing_left(served.platform):
        for odd in ("x" * 5000, "x%01y", "x%09y", "x%7Fy", "\u202e"):
            for path, param in (
                ("/v1/jobs/job_{}", "job_id"),
                ("/v1/deployments/{}", "deployment"),
                ("/v1/registry/models/{}", "model"),
                ("/v1/api_keys/key_{}", "key_id"),
            ):
                answer = api.get(path.format(odd))
                assert error_of(answer) == (404, "not_found", param), answer.text
            for path in ("/v1/datasets/{}", "/v1/registry/versions/{}"):
                answer = api.get(path.format(odd))
                assert answer.status_code in (404, 422) and answer.json()["error"]["param"], answer.text


def test_another_organisations_ids_are_not_found(served: Served, tenant: Tenant, api: httpx.Client) -> None:
    """Everything of one tenant is a 404 for another, by id and by name, and stays as it was."""
    ref = register(served, tenant, artifact("tabular-classification"), "churn")
    with Client(served.url, tenant.key) as client:
        client.deployments.create(ref, name="churn")
        client.deployments.wait_ready("churn", timeout=60)
    dataset = _upload(api, name="cancer", filename="cancer.csv").json()
    version = api.get(f"/v1/registry/versions/{ref}").json()
    rival = served.tenant(f"rival-of-{tenant.org_id}")
    with nothing_left(served.platform), served.client(rival.key) as other:
        for method, path, param in (
            ("GET", f"/v1/datasets/{dataset['id']}", "dataset"),
            ("GET", "/v1/datasets/cancer", "dataset"),
            ("GET", f"/v1/jobs/{dataset['validation_job_id']}", "job_id"),
            ("POST", f"/v1/jobs/{dataset['validation_job_id']}/cancel", "job_id"),
            ("GET", f"/v1/registry/versions/{version['id']}", "model"),
            ("DELETE", f"/v1/registry/versions/{version['id']}", "model"),
            ("GET", "/v1/registry/models/churn", "model"),
            ("GET", "/v1/deployments/churn", "deployment"),
            ("DELETE", "/v1/deployments/churn", "deployment"),
            ("GET", f"/v1/api_keys/{tenant.key_id}", "key_id"),
            ("DELETE", f"/v1/api_keys/{tenant.key_id}", "key_id"),
        ):
            answer = other.request(method, path)
            assert error_of(answer) == (404, "not_found", param), (path, answer.text)
        predict = other.post("/v1/deployments/churn/predict", json={"inputs": [{"age": 40.0}]})
        assert predict.status_code == 404 and predict.json()["error"]["param"] in ("model", "deployment")
        training = other.post(
            "/v1/training_jobs", json={"task": "tabular-classification", "dataset": dataset["id"]}
        )
        assert error_of(training) == (404, "not_found", "dataset"), training.text
    assert api.get("/v1/deployments/churn").json()["state"] == "ready"
