"""The fault suite's figures: each scenario reports what it measured (requests served, events
billed, lost, duplicated, recovery times) with the `figures` fixture; they are printed with the
test and again in a section at the end of the run, for quoting."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_FIGURES = pytest.StashKey[list[tuple[str, dict[str, object]]]]()

Figures = Callable[..., None]


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """`figures(name=value, ...)`: record (and print) a scenario's figures."""
    collected = request.config.stash.setdefault(_FIGURES, [])

    def report(**values: object) -> None:
        collected.append((request.node.nodeid, dict(values)))
        print(f"\n[fault figures] {request.node.nodeid}: " + ", ".join(f"{k}={v}" for k, v in values.items()))

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    collected = config.stash.get(_FIGURES, [])
    if not collected:
        return
    terminalreporter.section("fault suite figures")
    for nodeid, values in collected:
        terminalreporter.write_line(nodeid)
        for key, value in values.items():
            terminalreporter.write_line(f"    {key}: {value}")
