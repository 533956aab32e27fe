"""Liveness, readiness and metrics."""

from __future__ import annotations

from sqlalchemy import text

from tests.support.served import Served


def test_healthz_and_readyz(served: Served) -> None:
    with served.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_readyz_is_503_when_migrations_are_pending(served: Served) -> None:
    with served.platform.db.session() as session:
        session.execute(text("DELETE FROM alembic_version"))
        session.execute(text("INSERT INTO alembic_version (version_num) VALUES ('0001')"))
    with served.client() as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "migrations_pending"
    assert response.headers["retry-after"]


def test_metrics_count_requests_by_route_template_and_status(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        client.get(f"/v1/api_keys/{tenant.key_id}")
        client.get("/v1/api_keys/key_missing")
        text_body = client.get("/metrics").text
    assert (
        'openmaas_http_requests_total{method="GET",route="/v1/api_keys/{key_id}",status="200"} 1.0'
        in text_body
    )
    assert (
        'openmaas_http_requests_total{method="GET",route="/v1/api_keys/{key_id}",status="404"} 1.0'
        in text_body
    )
    assert "openmaas_http_request_duration_seconds_bucket" in text_body
    assert tenant.key_id not in text_body.replace("{key_id}", "")
