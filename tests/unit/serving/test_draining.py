"""Replaced runtimes: they stop admitting at once, close only once their running requests have
finished (or past the drain timeout, cut off), and the budget counts their bytes until then."""

from __future__ import annotations

from openmaas.serving.draining import Drain, Drains


class FakeRuntime:
    def __init__(self, running: int) -> None:
        self.running = running
        self.admitting = True
        self.closed = False

    def stop_admitting(self) -> None:
        self.admitting = False

    def close(self) -> None:
        self.closed = True


def test_a_drain_closes_once_its_requests_have_finished() -> None:
    drains = Drains(timeout_s=30)
    runtime = FakeRuntime(running=2)
    told: list[bool] = []
    drain = Drain("dep_1", "tiny:1", 1000, [runtime])
    drains.start(drain, lambda _, cut_off: told.append(cut_off))
    assert not runtime.admitting  # at once: no request starts on it any more
    assert not drain.done.wait(0.1) and not runtime.closed
    assert drains.held() == drains.held("dep_1") == 1000 and drains.held("dep_2") == 0
    runtime.running = 0
    assert drain.done.wait(5)
    assert runtime.closed and told == [False] and drains.held() == 0


def test_past_the_timeout_a_drain_cuts_its_requests_off() -> None:
    drains = Drains(timeout_s=0.05)
    runtime = FakeRuntime(running=1)
    told: list[bool] = []
    drains.wait(Drain("dep_1", "tiny:1", 1000, [runtime]), lambda _, cut_off: told.append(cut_off))
    assert runtime.closed and told == [True] and drains.held() == 0


def test_closing_the_drains_cuts_them_short() -> None:
    drains = Drains(timeout_s=600)
    runtime = FakeRuntime(running=1)
    drain = Drain("dep_1", "tiny:1", 1000, [runtime])
    drains.start(drain, lambda *_: None)
    drains.close()  # the server is stopping
    assert drain.done.is_set() and runtime.closed
