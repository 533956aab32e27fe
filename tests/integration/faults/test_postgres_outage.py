"""PostgreSQL stopped for 10 s under predict load, then started again, with a real `openmaas serve`
on it (the test owns the PostgreSQL server: see tests/support/postgres_cluster.py).

While it is down: every request that needs the database answers 503 with Retry-After in our error
shape, within a bounded time (never a 500, never a hang); `/readyz` answers 503 and `/healthz` 200.
Predictions are answered only once their usage is durable (the contract a killed server relies on),
so while the ledger cannot write they are refused with 503 too, and a request admitted as the
database went away is either answered 200 once its event is written or refused and not billed.
After it returns, the server recovers by itself, without a restart, within seconds, and nothing is
lost: every 200 has exactly one usage event, no refused request has one."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from openmaas import Client
from tests.integration.faults.conftest import Figures
from tests.integration.faults.load import Outcome, PredictLoad, account, billed
from tests.integration.serving.predict_support import artifact, register
from tests.support.platforms import make_platform
from tests.support.postgres_cluster import throwaway_postgres
from tests.support.serve_process import ServeProcess
from tests.support.served import Served

OUTAGE_S = 10.0
LOAD_S = 1.5  # of load before the outage and after the recovery
# How long a request may take, the outage or not: the ledger's wait for a durable event (set here)
# and a margin for a loaded machine.
METERING_WAIT_S = 4.0
ANSWER_BOUND_S = METERING_WAIT_S + 6.0
RECOVERY_BOUND_S = 10.0  # after PostgreSQL is back, until everything answers 200 again
SERVER_ENV = {
    "OPENMAAS_RATE_LIMIT_REQUESTS_PER_MINUTE": "100000000",
    "OPENMAAS_METERING_WAIT_TIMEOUT_S": str(METERING_WAIT_S),
}


@dataclass(frozen=True)
class Probe:
    path: str
    sent_at: float
    status: int | None
    code: str | None
    retry_after: str | None
    seconds: float


class Prober:
    """Asks `/healthz`, `/readyz`, `/metrics` and a route that reads the database
    (`GET /v1/datasets`) every `every_s`, as a load balancer, Prometheus and a dashboard would."""

    PATHS = ("/healthz", "/readyz", "/metrics", "/v1/datasets")

    def __init__(self, url: str, key: str, every_s: float = 0.25) -> None:
        self.url, self.key, self.every_s = url, key, every_s
        self.probes: list[Probe] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=ANSWER_BOUND_S * 3)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=ANSWER_BOUND_S * 2) as client:
            while not self._stop.is_set():
                for path in self.PATHS:
                    sent_at = time.monotonic()
                    try:
                        response = client.get(path)
                    except httpx.TransportError:
                        self.probes.append(Probe(path, sent_at, None, None, None, time.monotonic() - sent_at))
                        continue
                    error = response.json()["error"] if response.status_code >= 400 else {}
                    self.probes.append(
                        Probe(
                            path,
                            sent_at,
                            response.status_code,
                            error.get("code"),
                            response.headers.get("retry-after"),
                            time.monotonic() - sent_at,
                        )
                    )
                self._stop.wait(self.every_s)

    def first_ok_after(self, path: str, at: float) -> float | None:
        """When the first 200 of `path` asked after `at` came back."""
        return _first_ok([p for p in list(self.probes) if p.path == path], at)


def _first_ok(answers: list[Outcome] | list[Probe], at: float) -> float | None:
    """When the first 200 among `answers` sent after `at` came back."""
    return min((a.sent_at + a.seconds for a in answers if a.sent_at >= at and a.status == 200), default=None)


def test_postgres_down_for_10s_under_load_answers_503_and_recovers_losing_nothing(
    tmp_path: Path, figures: Figures
) -> None:
    with throwaway_postgres() as postgres:
        platform = make_platform(tmp_path / "home", postgres.url)
        assert platform.new_admin_key is not None
        server = ServeProcess(platform.settings, tmp_path / "serve.log", SERVER_ENV)
        try:
            server.start()
            served = Served(server.url, platform, platform.new_admin_key)
            tenant = served.tenant("acme")
            ref = register(served, tenant, artifact("tabular-classification"), "churn")
            with Client(server.url, tenant.key) as client:
                client.deployments.create(ref, name="churn")
                client.deployments.wait_ready("churn", timeout=120)

            with (
                PredictLoad(server.url, tenant.key, "churn", "pg", threads=3) as load,
                Prober(server.url, tenant.key) as prober,
            ):
                time.sleep(LOAD_S)  # load before the fault (its duration, not a wait for anything)
                stopping_at = time.monotonic()
                postgres.stop()  # returns once it is down
                down_at = time.monotonic()
                time.sleep(OUTAGE_S - (down_at - stopping_at))  # the fault itself
                starting_at = time.monotonic()
                postgres.start()  # returns once it accepts connections
                up_at = time.monotonic()
                deadline = up_at + RECOVERY_BOUND_S * 3
                while not (_first_ok(load.since(up_at), up_at) and prober.first_ok_after("/readyz", up_at)):
                    assert time.monotonic() < deadline, f"no recovery:\n{server.log_tail()}"
                    time.sleep(0.1)
                time.sleep(LOAD_S)  # load after the recovery
            events = billed(platform, tenant.org_id)
        finally:
            server.stop()
            platform.close()

    outcomes = load.outcomes
    during = [o for o in outcomes if stopping_at <= o.sent_at < up_at]
    probes_during = [p for p in prober.probes if down_at <= p.sent_at < starting_at]
    recovered = {
        "predict": _first_ok(outcomes, up_at),
        **{path: prober.first_ok_after(path, up_at) for path in ("/readyz", "/v1/datasets")},
    }
    totals = account(outcomes, events)
    figures(
        **{
            "predictions before the outage (200)": sum(
                1 for o in outcomes if o.sent_at < stopping_at and o.status == 200
            ),
            "outage (s)": round(up_at - stopping_at, 1),
            "sent during the outage": len(during),
            "during: answered 200 (in flight as it stopped)": sum(1 for o in during if o.status == 200),
            "during: answered 503": sum(1 for o in during if o.status == 503),
            "during: slowest answer (s)": round(max((o.seconds for o in during), default=0), 2),
            "during: what the client saw": dict(
                sorted(Counter(f"{o.status} {o.code or ''}".strip() for o in during).items())
            ),
            "during: probes": dict(
                sorted(Counter(f"{p.path} {p.status} {p.code or ''}".strip() for p in probes_during).items())
            ),
            **{
                f"recovered after PostgreSQL returned: {name} (s)": None
                if at is None
                else round(at - up_at, 2)
                for name, at in recovered.items()
            },
            **totals.figures(),
        }
    )

    answers = [*outcomes, *prober.probes]
    assert not [a for a in answers if a.status is None], "the server stopped answering"
    assert not [a for a in answers if a.status is not None and a.status >= 500 and a.status != 503]
    assert all(a.code for a in answers if a.status and a.status >= 400), "an error not in our shape"
    assert all(a.retry_after for a in answers if a.status == 503)
    assert max(a.seconds for a in answers) <= ANSWER_BOUND_S
    assert set(totals.errors) <= {"422 invalid_input", "503 database_unavailable", "503 metering_unavailable"}
    assert {p.status for p in probes_during if p.path == "/healthz"} == {200}
    assert {p.status for p in probes_during if p.path == "/metrics"} == {200}  # an operator sees in
    assert {p.status for p in probes_during if p.path == "/readyz"} == {503}
    assert {(p.status, p.code) for p in probes_during if p.path == "/v1/datasets"} == {
        (503, "database_unavailable")
    }
    assert sum(1 for o in during if o.status == 503) > 0
    for name, at in recovered.items():
        assert at is not None and at - up_at <= RECOVERY_BOUND_S, (name, at)
    assert totals.lost == [] and totals.duplicated == [] and totals.billed_refused == []
    assert totals.billed == totals.served
