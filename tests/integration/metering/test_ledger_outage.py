"""The ledger while its database is down: requests are refused at the gate (503) instead of being
served and held; a request whose usage wait runs out withdraws its event, so it is refused and not
billed, while served usage (a stream, storage) is still written once the database is back; an event
being written cannot be withdrawn. (faults/test_postgres_outage.py stops a real PostgreSQL.)"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from openmaas import errors
from openmaas.bootstrap import Platform
from openmaas.metering.events import UsageEvent
from openmaas.metering.ledger import UsageLedger
from openmaas.metering.receipts import Completions, Receipt
from openmaas.metering.tables import UsageRecord
from tests.integration.billing.helpers import make_org


class _Outage:
    """Makes a ledger's writes fail, as when its database is down, until `end()`."""

    def __init__(self, ledger: UsageLedger, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = threading.Event()
        self.down.set()
        real_write, real_probe = ledger._write, ledger._probe

        def write(batch: list[Receipt]) -> object:
            if self.down.is_set():
                raise OperationalError("INSERT", (), Exception("connection refused (injected)"))
            return real_write(batch)

        def probe() -> object:
            if self.down.is_set():
                raise OperationalError("SELECT 1", (), Exception("connection refused (injected)"))
            return real_probe()

        monkeypatch.setattr(ledger, "_write", write)
        monkeypatch.setattr(ledger, "_probe", probe)

    def end(self) -> None:
        self.down.clear()


@pytest.fixture
def ledger(platform: Platform) -> Iterator[UsageLedger]:
    """A ledger of its own with a short wait for durable usage."""
    ledger = UsageLedger(
        platform.db, platform.metering.prices, platform.clock, wait_timeout_s=0.5, retry_delay_s=0.02
    )
    yield ledger
    ledger.close()


def _written(platform: Platform, org_id: str) -> set[str]:
    with platform.db.read_session() as session:
        return set(session.scalars(select(UsageRecord.event_id).where(UsageRecord.org_id == org_id)))


def _until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_while_the_ledger_cannot_write_the_gate_refuses_requests_with_503(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = make_org(platform, "acme")
    gate, ledger = platform.gate, platform.meter
    first = gate.admit(org, None, "req_1", worst_case={"requests": 1})  # also fills the caches
    outage = _Outage(ledger, monkeypatch)
    receipt = gate.complete(first, {"requests": 1})
    _until(lambda: ledger.unavailable)
    for admit in (gate.admit, gate.admit_nowait):
        with pytest.raises(errors.ServiceUnavailable) as refused:
            admit(org, None, "req_2", worst_case={"requests": 1})
        assert refused.value.code == "metering_unavailable"
        assert refused.value.headers["Retry-After"] == "2"
    outage.end()
    assert receipt.wait(timeout=10).new  # written once the database is back
    assert not ledger.unavailable
    again = gate.admit_nowait(org, None, "req_3", worst_case={"requests": 1})
    assert again is not None
    gate.complete(again, {"requests": 1}).wait(timeout=10)
    assert _written(platform, org) == {"req_1", "req_3"}


def test_the_gate_opens_again_when_the_database_returns_though_every_event_was_withdrawn(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No new event comes while the gate is closed: the writer asks the database itself."""
    org = make_org(platform, "acme")
    gate, ledger = platform.gate, platform.meter
    first = gate.admit(org, None, "req_1", worst_case={"requests": 1})
    outage = _Outage(ledger, monkeypatch)
    receipt = gate.complete(first, {"requests": 1})

    async def refused() -> None:
        with pytest.raises(errors.ServiceUnavailable):
            await receipt.wait_async(timeout=0.3, withdraw=True)

    asyncio.run(refused())
    assert ledger.unavailable
    outage.end()
    _until(lambda: not ledger.unavailable)
    assert gate.admit_nowait(org, None, "req_2", worst_case={"requests": 1}) is not None
    assert receipt.wait(timeout=10).new is False  # resolved as never written
    assert _written(platform, org) == set()


def test_a_request_whose_usage_wait_runs_out_is_not_billed_but_served_usage_is(
    platform: Platform, ledger: UsageLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = make_org(platform, "acme")
    now = platform.clock.now()
    outage = _Outage(ledger, monkeypatch)

    async def during_the_outage() -> list[str]:
        refused = ledger.record(UsageEvent("refused", org, {"requests": 1}, now))
        refused_own_timeout = ledger.record(UsageEvent("refused-2", org, {"requests": 1}, now))
        streamed = ledger.record(UsageEvent("streamed", org, {"requests": 1}, now))
        answers = []
        for receipt, wait in (
            (refused, refused.wait_async(withdraw=True)),  # the default wait
            (refused_own_timeout, refused_own_timeout.wait_async(timeout=0.3, withdraw=True)),
            (streamed, streamed.wait_async()),  # served already: kept, written later
        ):
            with pytest.raises(errors.ServiceUnavailable) as late:
                await wait
            answers.append(f"{receipt.event.event_id} {late.value.code}")
        return answers

    answers = asyncio.run(during_the_outage())
    assert answers == [
        "refused metering_unavailable",
        "refused-2 metering_unavailable",
        "streamed overloaded",  # not withdrawn: written once the database is back
    ]
    stored = ledger.record(UsageEvent("storage", org, {"requests": 1}, now))
    outage.end()
    assert stored.wait(timeout=10).new
    _until(lambda: ledger.backlog == 0 and not ledger.unavailable)
    assert _written(platform, org) == {"streamed", "storage"}


def test_an_event_being_written_cannot_be_withdrawn(platform: Platform) -> None:
    completions = Completions()
    receipt = Receipt(UsageEvent("req", "org", {"requests": 1}, platform.clock.now()), [], completions)
    batch, withdrawn = completions.begin_attempt([receipt])
    assert (batch, withdrawn) == ([receipt], [])
    assert not completions.try_withdraw(receipt)  # the write may be committing it this instant
    completions.end_attempt()  # it failed
    assert completions.try_withdraw(receipt)
    assert completions.begin_attempt([receipt]) == ([], [receipt])  # the retry drops it
