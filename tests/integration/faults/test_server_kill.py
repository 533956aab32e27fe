"""A real `openmaas serve` killed with SIGKILL under concurrent predict load loses no acknowledged
usage and bills nothing twice: after a restart on the same database, every request the client saw
answered 200 has exactly one usage event (by its request id), no refused request has one, the
requests whose answer the kill cut off are retried with the same ids and billed once, and the
hourly sums and the prepaid wallet agree with the ledger."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmaas import Client
from openmaas.bootstrap import Platform
from openmaas.metering.tables import BillingAccount
from tests.integration.billing.helpers import make_account, make_pricebook
from tests.integration.faults.conftest import Figures
from tests.integration.faults.load import ROW, PredictLoad, account, billed, send_until_answered
from tests.integration.metering.hourly_check import assert_hours_match_ledger
from tests.integration.serving.predict_support import artifact, register
from tests.support.platforms import make_platform
from tests.support.serve_process import ServeProcess
from tests.support.served import Served

LOAD_S = 2.5  # of predict load before the kill
PREPAID_MICROS = 1_000_000_000
PRICE = "0.001"  # per request: 1,000 micros
# Requests are refused by nothing but the fault: no rate limit in the way of the load.
SERVER_ENV = {"OPENMAAS_RATE_LIMIT_REQUESTS_PER_MINUTE": "100000000"}


@pytest.fixture
def platform(tmp_path: Path, database_url: str) -> Iterator[Platform]:
    """The test's view of the server's home and database (the server runs in a subprocess)."""
    platform = make_platform(tmp_path / "home", database_url)
    yield platform
    platform.close()


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_sigkilled_server_bills_every_answered_prediction_once(
    platform: Platform, tmp_path: Path, figures: Figures
) -> None:
    assert platform.new_admin_key is not None
    make_pricebook(platform, [{"unit": "requests", "price": PRICE}])
    server = ServeProcess(platform.settings, tmp_path / "serve.log", SERVER_ENV)
    try:
        first_start_s = server.start()
        served = Served(server.url, platform, platform.new_admin_key)
        tenant = served.tenant("acme")
        make_account(platform, tenant.org_id, prepaid_micros=PREPAID_MICROS)
        ref = register(served, tenant, artifact("tabular-classification"), "churn")
        with Client(server.url, tenant.key) as client:
            client.deployments.create(ref, name="churn")
            client.deployments.wait_ready("churn", timeout=120)

        with PredictLoad(server.url, tenant.key, "churn", "kill") as load:
            started = time.monotonic()
            while time.monotonic() - started < LOAD_S or load.count(200) < 50:
                assert time.monotonic() - started < 120, "the load never got going"
                time.sleep(0.05)
            server.kill()
        at_kill = account(load.outcomes, billed(platform, tenant.org_id))

        restart_s = server.start()
        # The client retries what got no answer, with the same request ids.
        retried = [o for o in load.outcomes if o.status is None]
        outcomes = list(load.outcomes)
        path = "/v1/deployments/churn/predict"
        with served.client(tenant.key) as http:
            outcomes += [send_until_answered(http, path, lost.request_id, lost.row) for lost in retried]
            after_restart = http.post(path, json={"inputs": [ROW]})
        events = billed(platform, tenant.org_id)
        final = account(outcomes, events)
    finally:
        server.stop()

    with platform.db.read_session() as session:
        wallet = session.get(BillingAccount, tenant.org_id)
        assert wallet is not None
        spent = wallet.unbilled_micros
    hours = assert_hours_match_ledger(platform, tenant.org_id)
    summed = sum(quantity for (unit, *_), (quantity, _, _) in hours.items() if unit == "requests")
    figures(
        **{
            "requests sent": at_kill.sent,
            "answered 200 before the kill": at_kill.served,
            "refused (422, bad rows)": at_kill.refused,
            "cut off by the kill (no answer)": at_kill.unanswered,
            "of those, billed at the kill": at_kill.billed_unanswered,
            "retried after restart, answered 200": final.served - at_kill.served,
            "events billed": final.billed,
            "lost (200, no event)": len(final.lost),
            "duplicated (event twice)": len(final.duplicated),
            "billed though refused": len(final.billed_refused),
            "spent (micros, 1000 per request)": spent,
            "server start / restart (s)": f"{first_start_s:.1f} / {restart_s:.1f}",
        }
    )
    assert at_kill.served >= 50
    assert at_kill.lost == [] and at_kill.duplicated == [] and at_kill.billed_refused == []
    assert set(at_kill.errors) <= {"422 invalid_input"}  # only bad rows were refused
    # Written but not answered when the kill came: at most the requests in flight, one per client.
    assert at_kill.billed_unanswered <= 4
    assert after_restart.status_code == 200, after_restart.text
    assert final.unanswered == 0 and final.lost == [] and final.duplicated == []
    assert final.billed_refused == []
    assert final.billed == final.served
    assert summed == sum(events.values()) == final.served + 1  # the hourly sums, once each
    assert spent == (final.served + 1) * 1_000  # charged once per event, never for a retry
