"""Runtimes being retired: replaced by an update, they take no new requests, finish those running,
then close — each on its own thread, so a long stream never holds up the replica loader.

Until a retired runtime closes, the memory budget still counts its bytes (`held`). A runtime tells
how many requests it still runs through `running` (LLMs) or `in_flight` (the /predict family);
one that tells neither is closed at once. Past `timeout_s` the rest are cut off by closing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

POLL_S = 0.02  # how often a drain looks whether its requests have finished


def unfinished(runtime: Any) -> int:
    """Requests a runtime still runs (0 when it cannot tell)."""
    running = getattr(runtime, "running", None)
    return int(running if running is not None else getattr(runtime, "in_flight", 0))


@dataclass
class Drain:
    """One deployment's retired runtimes."""

    deployment_id: str
    versions: str  # `name:N` of what they served, for the events
    size_bytes: int
    runtimes: list[Any]
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> int:
        return sum(unfinished(runtime) for runtime in self.runtimes)


class Drains:
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._draining: dict[int, Drain] = {}
        self._stopping = threading.Event()

    def start(self, drain: Drain, on_closed: Callable[[Drain, bool], None]) -> None:
        """Stop admitting at once, then on a thread wait for the running requests and close;
        `on_closed(drain, cut_off)` is told when it has (cut off: requests were still running)."""
        for runtime in drain.runtimes:
            stop = getattr(runtime, "stop_admitting", None)
            if stop is not None:
                stop()
        with self._lock:
            self._draining[id(drain)] = drain
        thread = threading.Thread(
            target=self._finish, args=(drain, on_closed), name="replica-drain", daemon=True
        )
        thread.start()

    def wait(self, drain: Drain, on_closed: Callable[[Drain, bool], None]) -> None:
        """`start`, then wait until it has closed (a stop-then-start update)."""
        self.start(drain, on_closed)
        drain.done.wait()

    def held(self, deployment_id: str | None = None) -> int:
        """The bytes still held by retired runtimes (of one deployment, or of all)."""
        with self._lock:
            drains = list(self._draining.values())
        return sum(d.size_bytes for d in drains if deployment_id is None or d.deployment_id == deployment_id)

    def close(self) -> None:
        """Cut every drain short (the server is stopping) and wait until all have closed."""
        self._stopping.set()
        with self._lock:
            drains = list(self._draining.values())
        for drain in drains:
            drain.done.wait()

    def _finish(self, drain: Drain, on_closed: Callable[[Drain, bool], None]) -> None:
        deadline = time.monotonic() + self._timeout_s
        while drain.running and time.monotonic() < deadline and not self._stopping.wait(POLL_S):
            pass
        cut_off = drain.running > 0
        try:
            for runtime in drain.runtimes:
                runtime.close()
        finally:
            with self._lock:  # freed: the budget no longer counts it
                self._draining.pop(id(drain), None)
            try:
                on_closed(drain, cut_off)
            finally:
                drain.done.set()
