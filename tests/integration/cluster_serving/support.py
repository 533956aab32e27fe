"""What the cluster-serving tests share: a server on a Ray instance, waiting for a deployment,
and the usage events per request id."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.platforms import make_platform
from tests.support.served import Served, serving


@contextmanager
def server(home: Path, **settings: object) -> Iterator[Served]:
    with serving(make_platform(home, f"sqlite:///{home / 'openmaas.db'}", **settings)) as served:
        yield served


def wait_ready(http: httpx.Client, name: str, timeout_s: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row: dict[str, Any] = http.get(f"/v1/deployments/{name}").json()
        assert row["state"] != "failed", row["error"]
        if row["state"] == "ready" and row["starting"] is None:
            return row
        time.sleep(0.2)
    raise AssertionError(f"{name} did not become ready")


def usage_events(served: Served, key: str) -> list[dict[str, Any]]:
    """Every usage event of the key's organisation, one per (request, unit)."""
    events: list[dict[str, Any]] = []
    after = None
    with served.client(key) as http:
        while True:
            params: dict[str, Any] = {"granularity": "event", "limit": 1000}
            if after:
                params["after"] = after
            page = http.get("/v1/usage", params=params).json()
            events += page["data"]
            if not page.get("has_more"):
                return events
            after = page["last_id"]


def metered_requests(served: Served, key: str) -> Counter[str]:
    """How many `requests` usage events each request id has."""
    return Counter(e["request_id"] for e in usage_events(served, key) if e["unit"] == "requests")
