"""The gateway answers predictions through `PredictFastPath` (no FastAPI routing), with the same
errors, headers and metrics as any route; other paths fall through to the app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openmaas import Client
from openmaas.api.routers.predict import PredictFastPath
from tests.integration.serving.predict_support import artifact, register
from tests.support.served import Served

ROW = {"age": 75.0, "plan": "basic", "noise": 0.3}
PATH = "/v1/deployments/churn/predict"


def _deploy(served: Served) -> str:
    tenant = served.tenant("acme")
    ref = register(served, tenant, artifact("tabular-classification"), "churn")
    with Client(served.url, tenant.key) as client:
        client.deployments.create(ref, name="churn")
        client.deployments.wait_ready("churn", timeout=60)
    return tenant.key


def _untouched(handler: PredictFastPath, path: str, method: str) -> bool:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "state": {}}
    handled = asyncio.run(handler(scope, receive, send))
    return not handled and not sent and "route" not in scope


def test_only_predict_posts_take_the_fast_path() -> None:
    handler = PredictFastPath(platform=None, route=None)  # type: ignore[arg-type]
    for path, method in [
        ("/v1/deployments/churn/events", "POST"),
        ("/v1/deployments/a/b/predict", "POST"),
        ("/v1/deployments//predict", "POST"),
        ("/v1/deploymentsX/predict", "POST"),
        (PATH, "GET"),
    ]:
        assert _untouched(handler, path, method), (path, method)


def test_fast_path_answers_with_the_gateways_errors_headers_and_metrics(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _deploy(served)
    other = served.tenant("other")
    handled: list[str] = []
    original = PredictFastPath.__call__

    async def counting(self: PredictFastPath, scope: Any, receive: Any, send: Any) -> bool:
        done = await original(self, scope, receive, send)
        if done:
            handled.append(scope["path"])
        return done

    monkeypatch.setattr(PredictFastPath, "__call__", counting)
    with served.client(key) as http:
        ok = http.post(PATH, json={"inputs": [ROW]})
        assert ok.status_code == 200 and ok.json()["predictions"][0]["label"] == "yes"
        assert ok.headers["x-request-id"].startswith("req_") and ok.headers["x-ratelimit-limit-requests"]
        assert handled == [PATH]
        mine = http.post(PATH, json={"inputs": [ROW]}, headers={"x-request-id": "client-chosen-1"})
        assert mine.headers["x-request-id"] == "client-chosen-1"
        bad = http.post(PATH, content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
        timeout = http.post(PATH, json={"inputs": [ROW]}, headers={"x-request-timeout": "0"})
        assert timeout.status_code == 422 and timeout.json()["error"]["param"] == "X-Request-Timeout"
        assert http.post("/v1/deployments/a/b/predict", json={}).json()["error"]["code"] == "unknown_route"
        assert http.get(PATH).status_code == 405
    with served.client(other.key) as http:
        hidden = http.post(PATH, json={"inputs": [ROW]})
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"
    with served.client(None) as http:
        anonymous = http.post(PATH, json={"inputs": [ROW]})
        assert anonymous.status_code == 401 and anonymous.headers["x-request-id"]
    assert handled == [PATH, PATH]
    with served.client(served.admin_key) as http:
        metrics = http.get("/metrics").text
    counted = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("openmaas_http_requests_total")
        and 'route="/v1/deployments/{deployment}/predict"' in line
        and 'status="200"' in line
    ]
    assert counted == [2.0]


def test_a_timeout_in_the_body_is_a_number(served: Served) -> None:
    """`"timeout": "5"` was taken while the document says a number (found by schemathesis); the
    `X-Request-Timeout` header stays text."""
    tenant = served.tenant("acme")
    with served.client(tenant.key) as http:
        for route in ("predict", "explain"):
            response = http.post(f"/v1/deployments/none/{route}", json={"inputs": [{}], "timeout": "5"})
            assert response.status_code == 422, response.text
            assert response.json()["error"]["param"] == "timeout"
            headed = http.post(
                f"/v1/deployments/none/{route}", json={"inputs": [{}]}, headers={"X-Request-Timeout": "5"}
            )
            assert headed.status_code == 404, headed.text
