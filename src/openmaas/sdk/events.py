"""Job events as they happen: the request for a job's server-sent-event stream, and the parser
that turns its lines into `JobEventPublic`s."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from openmaas.schemas.jobs import JobEventPublic


@dataclass(frozen=True)
class EventStream:
    """`GET path` answered with `text/event-stream`, read until its `done` event."""

    path: str
    params: dict[str, Any] = field(default_factory=dict)


class EventStreamParser:
    """Reads a `text/event-stream` line by line into job events; `done` turns true at its end."""

    def __init__(self) -> None:
        self.done = False
        self._kind = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> JobEventPublic | None:
        """The event that `line` completes, if it completes one."""
        if line.startswith(":"):
            return None
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                self._kind = value
            elif name == "data":
                self._data.append(value)
            return None
        event = None
        if self._kind == "done":
            self.done = True
        elif self._data:
            event = JobEventPublic.model_validate(json.loads("\n".join(self._data)))
        self._kind, self._data = "message", []
        return event
