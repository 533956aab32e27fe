"""Structured log lines: one JSON object or one logfmt line per record (exceptions included), events
that a plain formatter still shows readably, and events held until their transaction commits."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from openmaas import logs


class _Lines(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("openmaas.test-logs")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    logger.handlers.clear()


def _capture(logger: logging.Logger, formatter: logging.Formatter) -> _Lines:
    handler = _Lines(formatter)
    logger.addHandler(handler)
    return handler


def test_json_lines_carry_the_event_its_fields_and_any_exception(logger: logging.Logger) -> None:
    lines = _capture(logger, logs.JsonFormatter())
    logs.event(logger, "job_status", job_id="job_1", status="failed", attempt=2, level=logging.ERROR)
    try:
        raise ValueError("bad\nthing")
    except ValueError as exc:
        logs.event(logger, "deployment_failed", deployment="bot", exc_info=exc)
    logger.info("plain %s message", "old-style")
    assert len(lines.lines) == 3 and all("\n" not in line for line in lines.lines)
    first, second, third = (json.loads(line) for line in lines.lines)
    assert first["event"] == "job_status" and first["level"] == "error"
    assert (first["job_id"], first["status"], first["attempt"]) == ("job_1", "failed", 2)
    assert first["logger"] == "openmaas.test-logs" and first["ts"].endswith("Z")
    assert second["deployment"] == "bot" and "ValueError: bad" in second["exc"]
    assert third["msg"] == "plain old-style message" and "event" not in third


def test_logfmt_quotes_what_it_must_and_leaves_out_none(logger: logging.Logger) -> None:
    lines = _capture(logger, logs.LogfmtFormatter())
    logs.event(
        logger,
        "request",
        route="/v1/x",
        status=200,
        took=1.5,
        note='say "hi"\nbye',
        empty="",
        gone=None,
        ok=True,
    )
    (line,) = lines.lines
    assert line.split(" ", 3)[1:3] == ["level=info", "logger=openmaas.test-logs"]
    assert line.endswith(
        ' event=request route=/v1/x status=200 took=1.5 note="say \\"hi\\"\\nbye" empty="" ok=true'
    )


def test_a_plain_formatter_shows_an_event_as_its_name_and_fields(logger: logging.Logger) -> None:
    lines = _capture(logger, logging.Formatter("%(levelname)s %(message)s"))
    logs.event(logger, "job_exited", job_id="job_1", exit_code=0)
    assert lines.lines == ["INFO event=job_exited job_id=job_1 exit_code=0"]


def test_an_event_after_commit_waits_for_the_commit_and_goes_with_a_rollback(logger: logging.Logger) -> None:
    lines = _capture(logger, logs.LogfmtFormatter())
    engine = create_engine("sqlite://")
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        logs.event_after_commit(session, logger, "credit_transaction", amount="1.00")
        assert lines.lines == []
        session.commit()
        assert len(lines.lines) == 1 and "amount=1.00" in lines.lines[0]
        session.execute(text("SELECT 1"))  # the change the event tells of
        logs.event_after_commit(session, logger, "credit_transaction", amount="2.00")
        session.rollback()
        session.commit()
        assert len(lines.lines) == 1


def test_configure_replaces_its_own_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    logs.configure("json", "warning")
    logs.configure("logfmt", "info")
    ours = [h for h in root.handlers if isinstance(h.formatter, logs.JsonFormatter | logs.LogfmtFormatter)]
    assert len(ours) == 1 and isinstance(ours[0].formatter, logs.LogfmtFormatter)
    assert root.level == logging.INFO
