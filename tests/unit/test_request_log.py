"""The request log's writer: a line per finished request with the caller and what it used, its time
from the clock, nothing queued while the log is off, and a bounded backlog whose overflow is
counted rather than kept."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from openmaas.api.request_log import RequestLog
from openmaas.logs import Event
from tests.support.clock import FakeClock


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, _Records]]:
    logger = logging.getLogger("openmaas.test-requests")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = _Records()
    logger.addHandler(handler)
    yield logger, handler
    logger.handlers.clear()


def test_a_line_per_request_with_its_caller_usage_and_time(captured: tuple[logging.Logger, _Records]) -> None:
    logger, handler = captured
    clock = FakeClock()
    log = RequestLog(clock, logger=logger, interval_s=3600)
    log.start()
    principal = SimpleNamespace(org_id="org_1", key_id="key_1")
    state = {"principal": principal, "usage": {"requests": 1, "input_tokens": 7, "output_tokens": 3}}
    log.add(clock.monotonic() - 2.0, 0.0125, "req_1", "POST", "/v1/completions", 200, state)
    log.add(clock.monotonic(), 0.001, "req_2", "GET", "<unmatched>", 401, {})
    log.close()
    first, second = handler.records
    assert isinstance(first.msg, Event) and first.msg.name == "request"
    assert first.msg.fields == {
        "request_id": "req_1",
        "method": "POST",
        "route": "/v1/completions",
        "status": 200,
        "duration_ms": 12.5,
        "org_id": "org_1",
        "key_id": "key_1",
        "input_tokens": 7,
        "output_tokens": 3,
    }
    assert first.created == pytest.approx(clock.now().timestamp() - 2.0)  # when it ended
    assert isinstance(second.msg, Event)
    assert (second.msg.fields["org_id"], second.msg.fields["key_id"]) == (None, None)


def test_nothing_is_queued_while_the_log_is_off(captured: tuple[logging.Logger, _Records]) -> None:
    logger, handler = captured
    logger.setLevel(logging.WARNING)
    log = RequestLog(FakeClock(), logger=logger, interval_s=3600)
    log.add(0.0, 0.001, "req_0", "GET", "/healthz", 200, {})  # not started: no writer to drain it
    log.start()
    log.add(0.0, 0.001, "req_1", "GET", "/healthz", 200, {})
    log.close()
    assert handler.records == [] and not log._pending


def test_a_full_backlog_drops_and_counts_new_lines(captured: tuple[logging.Logger, _Records]) -> None:
    logger, handler = captured
    log = RequestLog(FakeClock(), logger=logger, max_pending=2, interval_s=3600)
    log.start()
    for i in range(5):
        log.add(0.0, 0.001, f"req_{i}", "GET", "/healthz", 200, {})
    log.close()
    assert [r.msg.fields["request_id"] for r in handler.records] == ["req_0", "req_1"]  # type: ignore[union-attr]
    assert log.dropped == 3
