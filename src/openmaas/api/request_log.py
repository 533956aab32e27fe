"""The request log: one structured line per HTTP request, written off the event loop.

Each line (logger `openmaas.requests`, event `request`) names the request id, the method, the route
template (never the path: it may hold user input), the status, the latency in milliseconds, the
caller's organisation and key id, and what the request used when it was metered (`rows`,
`input_tokens`, `output_tokens`). Never the key, the query string, a header or a body.

The gateway calls `add` as each request ends: one tuple appended to a bounded deque, no
formatting, no lock, no I/O (a fraction of a microsecond). A daemon thread turns the entries into
log records every `interval_s`; the log handlers (see `openmaas.logs.configure`) format and write
them there. When the thread falls behind by `max_pending` lines, new lines are dropped and counted
(`dropped`, on `/metrics`) rather than growing memory.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from openmaas.clock import Clock
from openmaas.logs import Event

# (ended: clock.monotonic(), seconds, request id, method, route, status, the request's state)
Entry = tuple[float, float, str, str, str, int, dict[str, Any]]

_LOGGER = "openmaas.requests"


class RequestLog:
    def __init__(
        self,
        clock: Clock,
        *,
        max_pending: int = 50_000,
        interval_s: float = 0.05,
        logger: logging.Logger | None = None,
    ) -> None:
        self._clock = clock
        self._logger = logger or logging.getLogger(_LOGGER)
        self._max_pending = max_pending
        self._interval_s = interval_s
        self._pending: deque[Entry] = deque()
        self.dropped = 0
        # Read on every request; refreshed by the writer thread, so a level change shows within
        # `interval_s`. Off until `start`: with no writer, nothing may pile up.
        self.enabled = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self, ended: float, seconds: float, request_id: str, method: str, route: str, status: int, state: Any
    ) -> None:
        """Log a finished request (on the event loop: keep it to an append)."""
        if not self.enabled:
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append((ended, seconds, request_id, method, route, status, state))

    def start(self) -> None:
        if self._thread is not None:
            return
        self.enabled = self._logger.isEnabledFor(logging.INFO)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer after writing what is pending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.flush()
        self.enabled = False

    def flush(self) -> None:
        """Write every pending line now (the writer thread's work; tests call it too)."""
        pending = self._pending
        if not pending:
            self.enabled = self._thread is not None and self._logger.isEnabledFor(logging.INFO)
            return
        # Entries carry monotonic end times: one wall-clock reading per batch turns them into times.
        wall, mono = self._clock.now().timestamp(), self._clock.monotonic()
        logger = self._logger
        # Every record of a batch is a copy of one made the usual way, with its own event and time:
        # LogRecord's constructor (thread, process, file name lookups) was half the writer's time.
        template = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "", (), None).__dict__
        made = template["created"]
        while pending:
            entry = pending.popleft()
            record = logging.LogRecord.__new__(logging.LogRecord)
            record.__dict__.update(template)
            record.msg = _event(entry)
            record.created = created = wall - (mono - entry[0])
            record.msecs = (created * 1000) % 1000
            record.relativeCreated = template["relativeCreated"] + (created - made) * 1000
            logger.handle(record)
        self.enabled = self._thread is not None and logger.isEnabledFor(logging.INFO)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.flush()
            except Exception:  # a broken handler must not stop the log for good
                logging.getLogger("openmaas.api").exception("writing the request log failed")


def _event(entry: Entry) -> Event:
    _, seconds, request_id, method, route, status, state = entry
    principal = state.get("principal")
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "org_id": getattr(principal, "org_id", None),
        "key_id": getattr(principal, "key_id", None),
    }
    usage = state.get("usage")
    if usage:
        for unit, quantity in usage.items():
            if unit != "requests":  # every line is one request
                fields[unit] = quantity
    return Event("request", fields)
