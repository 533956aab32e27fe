"""A metering process killed with SIGKILL at the ledger's full rate loses no acknowledged usage:
after the kill the ledger holds exactly one event for every request whose answer was given, none
twice. The process stands in for a server (four threads recording straight into the ledger, far
faster than HTTP serves), so that several group-commit batches are in flight when the kill lands;
`test_server_kill` kills a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from openmaas.bootstrap import Platform
from openmaas.metering.tables import UsageRecord, usage_lines
from tests.integration.billing.helpers import make_org, make_pricebook
from tests.integration.metering.hourly_check import assert_hours_match_ledger

# A stand-in for an API server: 4 threads "serve" requests, each answered (the id printed) only
# after its usage event is durable, exactly as the metered routes wait on their receipt.
SERVER = """
import sys, threading
from openmaas.bootstrap import build_platform
from openmaas.config import Settings
from openmaas.metering.events import UsageEvent

home, url, org = sys.argv[1:4]
platform = build_platform(Settings(home=home, database_url=url, secret_key="00" * 32))
lock = threading.Lock()

def serve(worker):
    for i in range(10**9):
        request_id = f"req-{worker}-{i}"
        quantities = {"requests": 1, "input_tokens": 7, "output_tokens": 3}
        platform.meter.record(UsageEvent(request_id, org, quantities, platform.clock.now())).wait()
        with lock:
            sys.stdout.write(request_id + "\\n")
            sys.stdout.flush()

for worker in range(4):
    threading.Thread(target=serve, args=(worker,), daemon=True).start()
threading.Event().wait()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_sigkill_under_load_loses_no_acknowledged_usage(platform: Platform, tmp_path: Path) -> None:
    org = make_org(platform, "acme")
    make_pricebook(platform, [{"unit": "requests", "price": "0.01"}])
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(tmp_path / "child"), platform.db.url, org],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    acknowledged: list[str] = []

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            acknowledged.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120  # the child imports the platform first: slow on a busy machine
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    reader.join(10)
    assert len(acknowledged) >= 300, "the child did not get going"
    with platform.db.read_session() as session:
        lines = usage_lines(UsageRecord.org_id == org)
        rows = session.execute(select(lines.c.event_id, func.count()).group_by(lines.c.event_id)).all()
    units = dict(rows)
    missing = [request_id for request_id in acknowledged if request_id not in units]
    assert missing == []
    assert set(units.values()) == {3}  # each event whole: all three units, none twice
    # Events written but not yet answered when the kill came are few: at most one batch in flight.
    assert len(units) - len(acknowledged) <= 4
    # The hourly sums were written with the events: none lost, none twice.
    hours = assert_hours_match_ledger(platform, org)
    assert sum(quantity for (unit, *_), (quantity, _, _) in hours.items() if unit == "requests") == len(units)
