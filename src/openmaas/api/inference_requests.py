"""What the hand-parsed inference routes (predict, explain) take from the connection itself: a
probe that tells whether the client went away."""

from __future__ import annotations

from collections.abc import Callable

from openmaas.api.middleware import Receive


def disconnect_probe(receive: Receive) -> Callable[[], bool] | None:
    """A cheap check that the client went away, read by a queue before it runs the job.

    uvicorn's request cycle (our server) flags a lost connection on itself; other servers get no
    probe, and their abandoned jobs simply run."""
    cycle = getattr(receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return None
    return lambda: bool(cycle.disconnected)
