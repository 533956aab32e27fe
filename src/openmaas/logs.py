"""Structured log lines: what the server prints about its requests, jobs, deployments and money.

- `event(logger, "job_status", job_id=…, status=…)` logs a named event with fields; a plain
  formatter shows it as `job_status job_id=… status=…`, the structured ones as JSON or logfmt.
- `event_after_commit(session, …)` logs it once the session's transaction commits (nothing for a
  rollback), so the log never tells of a state change the database did not keep.
- `configure(format, level)` installs one stderr handler with the JSON or logfmt formatter
  (`OPENMAAS_LOG_FORMAT`); server processes call it once at start, never the library code.
- `bind_request` / `note_usage`: the gateway binds each request's state, and the code that meters
  a request notes what it used (rows, tokens), for the request log line.

Fields are what the code names: never a key, a secret or a request body.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

LogFormat = Literal["logfmt", "json"]

_PENDING = "openmaas.logs.pending"  # `Session.info` key: events waiting for the commit


class Event:
    """A log message with a name and fields, rendered only when a handler formats it."""

    __slots__ = ("fields", "name")

    def __init__(self, name: str, fields: dict[str, Any]) -> None:
        self.name = name
        self.fields = fields

    def __str__(self) -> str:
        return logfmt({"event": self.name, **self.fields})


def event(
    logger: logging.Logger,
    name: str,
    *,
    level: int = logging.INFO,
    exc_info: BaseException | None = None,
    **fields: Any,
) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, Event(name, fields), exc_info=exc_info)


def event_after_commit(
    session: Session, logger: logging.Logger, name: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """`event`, once `session`'s transaction commits; dropped if it rolls back."""
    if not logger.isEnabledFor(level):
        return
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        sa_event.listen(session, "after_commit", _emit_pending)
        sa_event.listen(session, "after_soft_rollback", _drop_pending)
    pending.append((logger, level, Event(name, fields)))


def _emit_pending(session: Session) -> None:
    pending = session.info.get(_PENDING)
    while pending:
        logger, level, message = pending.pop(0)
        logger.log(level, message)


def _drop_pending(session: Session, previous: SessionTransaction) -> None:
    # Every rollback of the whole transaction, also one that had sent no SQL; a savepoint's
    # rollback keeps them (the transaction around it may still commit).
    pending = session.info.get(_PENDING)
    if pending and not previous.nested:
        pending.clear()


# --- formatting ---------------------------------------------------------------------------------


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text (shared: cheap to redo)


def _timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds; the date and time of day are formatted once a second."""
    second = int(created)
    cached, text = _second
    if cached != second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[:] = [second, text]
    return f"{text}.{int((created - second) * 1000):03d}Z"


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """A record as ordered fields: time, level, logger, then the event and its fields (or the
    message), then the exception if any."""
    out: dict[str, Any] = {
        "ts": _timestamp(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
    }
    message = record.msg
    if isinstance(message, Event) and not record.args:
        out["event"] = message.name
        out.update(message.fields)
    else:
        out["msg"] = record.getMessage()
    if record.exc_info:
        out["exc"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        out["exc"] = record.exc_text
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(_fields(record, self), default=str).decode()


class LogfmtFormatter(logging.Formatter):
    """`key=value` pairs per line; values with spaces, quotes or `=` are quoted."""

    def format(self, record: logging.LogRecord) -> str:
        return logfmt(_fields(record, self))


# A value written bare: no space, quote, `=`, backslash or control character (nor an empty one).
_BARE = re.compile(r'[^\x00-\x20"=\\\x7f-\x9f\u2028\u2029]+')


def logfmt(fields: dict[str, Any]) -> str:
    """`key=value` pairs (None values left out); a value is quoted, JSON-style, when it must be."""
    parts = []
    for key, value in fields.items():
        kind = type(value)
        if kind is str:
            text = value if _BARE.fullmatch(value) else orjson.dumps(value).decode()
        elif kind is int or kind is float:
            text = str(value)
        elif value is None:
            continue
        elif kind is bool:
            text = "true" if value else "false"
        else:
            text = str(value)
            if not _BARE.fullmatch(text):
                text = orjson.dumps(text).decode()
        parts.append(f"{key}={text}")
    return " ".join(parts)


_FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "logfmt": LogfmtFormatter}


class _Handler(logging.StreamHandler):
    """Ours, so `configure` can replace it when called again."""


def configure(format: LogFormat = "logfmt", level: str = "info") -> None:
    """Send every log record of this process to stderr as JSON or logfmt lines, from `level` up."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    handler = _Handler(sys.stderr)
    handler.setFormatter(_FORMATTERS[format]())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic narrates every migration step at info ("Context impl SQLiteImpl." …): noise to an
    # operator; its warnings and errors still come through.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


# --- the request being served -------------------------------------------------------------------

# The state of the request this task serves (the ASGI scope's `state`): set by the gateway, read
# by the request log when the request ends. A context variable, because the code that learns what
# a request used (metering) runs far below the HTTP layer, in the request's task or its children.
_request_state: ContextVar[dict[str, Any] | None] = ContextVar("openmaas_request_state", default=None)


def bind_request(state: dict[str, Any]) -> Token[dict[str, Any] | None]:
    return _request_state.set(state)


def unbind_request(token: Token[dict[str, Any] | None]) -> None:
    _request_state.reset(token)


def note_usage(units: dict[str, int]) -> None:
    """Tell the request log what the current request used (`rows`, `input_tokens`, …)."""
    state = _request_state.get()
    if state is not None:
        state["usage"] = units
