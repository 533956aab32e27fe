"""A platform whose clock the test moves, served over HTTP when a test needs the API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from openmaas.api.app import create_app
from openmaas.bootstrap import Platform
from tests.support.clock import FakeClock
from tests.support.platforms import make_platform
from tests.support.served import Served
from tests.support.server import running_server


@dataclass
class Clocked:
    platform: Platform
    clock: FakeClock

    def move_to(self, when: datetime) -> None:
        self.clock.advance((when - self.clock.now()).total_seconds())


@pytest.fixture
def clocked(tmp_path: Path, database_url: str) -> Iterator[Clocked]:
    clock = FakeClock(datetime(2026, 11, 20, 12, 0, tzinfo=UTC))
    platform = make_platform(tmp_path / "home", database_url, clock=clock)
    yield Clocked(platform, clock)
    platform.close()


@pytest.fixture
def clocked_served(clocked: Clocked) -> Iterator[tuple[Served, Clocked]]:
    assert clocked.platform.new_admin_key is not None
    with running_server(create_app(clocked.platform)) as url:
        yield Served(url, clocked.platform, clocked.platform.new_admin_key), clocked
