"""Failed served requests are counted per local hour (the console's error rate) and never billed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import func, select

from openmaas import errors
from openmaas.metering.failures import failures_between
from openmaas.metering.tables import UsageRecord
from openmaas.serving.inference import _server_side
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_org, make_pricebook


def test_failures_are_counted_in_local_hours_and_not_billed(clocked: Clocked) -> None:
    platform = clocked.platform
    make_pricebook(platform, [{"unit": "requests", "price": "0.01"}])
    org = make_org(platform, "mumbai", timezone="Asia/Kolkata")  # hours start at half past
    clocked.move_to(datetime(2026, 11, 20, 12, 10, tzinfo=UTC))
    gate = platform.gate
    for i in range(3):
        admission = gate.admit(org, None, f"failed-{i}", worst_case={"requests": 1})
        gate.abandon(admission)
        gate.failed(admission)
    assert gate.failures is not None
    gate.failures.flush()
    with platform.db.read_session() as session:
        hour = datetime(2026, 11, 20, 11, 30, tzinfo=UTC)
        assert failures_between(session, org, hour, datetime(2026, 11, 20, 12, 30, tzinfo=UTC)) == 3
        assert (
            failures_between(session, org, datetime(2026, 11, 20, 12, 30, tzinfo=UTC), hour.replace(day=21))
            == 0
        )
        assert session.scalar(select(func.count()).select_from(UsageRecord)) == 0  # nothing billed


def test_only_server_side_failures_count() -> None:
    assert _server_side(RuntimeError("replica crashed"))
    assert _server_side(errors.ServiceUnavailable("busy"))
    assert not _server_side(errors.InvalidRequest("prompt too long", param="messages"))
    assert not _server_side(asyncio.CancelledError())  # the client went away
