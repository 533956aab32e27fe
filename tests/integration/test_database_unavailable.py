"""A database that cannot be reached is a 503 with Retry-After in our error shape, on FastAPI's
routes and on the gateway's fast path alike, never a 500; `/readyz` fails and `/healthz` does not;
and the same server answers again once the database is back, with no restart.
(tests/integration/faults/test_postgres_outage.py stops a real PostgreSQL under load.)"""

from __future__ import annotations

import httpx

from tests.support.databases import unreachable
from tests.support.served import Served


def _unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.json()["error"]["type"] == "server_error"
    assert int(response.headers["retry-after"]) >= 1


def test_an_unreachable_database_answers_503_with_retry_after_until_it_returns(served: Served) -> None:
    used = served.tenant("acme")
    unused = served.tenant("other")  # its key is in no cache: authenticating it needs the database
    with served.client(used.key) as api, served.client(unused.key) as cold, served.client() as anonymous:
        assert api.get("/v1/datasets").status_code == 200
        with unreachable(served.platform.db):
            _unavailable(api.get("/v1/datasets"))  # the route's own session
            _unavailable(cold.get("/v1/datasets"))  # authentication
            _unavailable(cold.post("/v1/deployments/churn/predict", json={"inputs": [{}]}))  # fast path
            _unavailable(api.post("/v1/api_keys", json={"name": "k"}))
            assert anonymous.get("/readyz").status_code == 503
            assert anonymous.get("/healthz").status_code == 200
        assert api.get("/v1/datasets").status_code == 200
        assert cold.get("/v1/datasets").status_code == 200
        assert anonymous.get("/readyz").status_code == 200
