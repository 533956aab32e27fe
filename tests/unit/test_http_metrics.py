"""The gateway's HTTP metrics: counts by method, route and status, and cumulative latency buckets
(a value on a bucket's bound counts in it, as Prometheus' `le` says), bounded in series."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from openmaas.api import middleware
from openmaas.api.middleware import Metrics
from tests.support.clock import FakeClock


def _lines(metrics: Metrics) -> set[str]:
    return set(generate_latest(metrics.registry).decode().splitlines())


def test_counts_and_cumulative_latency_buckets() -> None:
    metrics = Metrics(FakeClock())
    for seconds in (0.0004, 0.0005, 0.003, 20.0):
        metrics.observe("POST", "/v1/x", 200, seconds)
    metrics.observe("POST", "/v1/x", 429, 0.001)
    lines = _lines(metrics)
    assert 'openmaas_http_requests_total{method="POST",route="/v1/x",status="200"} 4.0' in lines
    assert 'openmaas_http_requests_total{method="POST",route="/v1/x",status="429"} 1.0' in lines
    bucket = 'openmaas_http_request_duration_seconds_bucket{{le="{}",method="POST",route="/v1/x"}} {}'
    assert bucket.format("0.0005", "2.0") in lines
    assert bucket.format("0.001", "3.0") in lines
    assert bucket.format("0.005", "4.0") in lines
    assert bucket.format("1.0", "4.0") in lines  # bounds written as prometheus_client writes them
    assert bucket.format("10.0", "4.0") in lines
    assert bucket.format("+Inf", "5.0") in lines
    assert 'openmaas_http_request_duration_seconds_count{method="POST",route="/v1/x"} 5.0' in lines
    created = {line.split("{")[0] for line in lines if "_created{" in line}
    assert created == {"openmaas_http_requests_created", "openmaas_http_request_duration_seconds_created"}


def test_series_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(middleware, "_MAX_SERIES", 3)
    metrics = Metrics(FakeClock())
    for method in ("A", "B", "C", "D", "E"):
        metrics.observe(method, "<unmatched>", 405, 0.001)
    lines = _lines(metrics)
    assert 'openmaas_http_requests_total{method="C",route="<unmatched>",status="405"} 1.0' in lines
    assert 'openmaas_http_requests_total{method="OTHER",route="<overflow>",status="405"} 2.0' in lines
    assert not any('method="D",route="<unmatched>"' in line for line in lines)
