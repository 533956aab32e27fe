"""Concurrent predict load for the fault scenarios, and the accounting that checks it against the
ledger: every request carries its own `X-Request-Id` (the usage event's id), and every outcome the
client saw is kept, so a test can say which answered requests were billed, which twice, and which
refused requests were billed anyway."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select

from openmaas.bootstrap import Platform
from openmaas.metering.tables import UsageRecord

# A row of the churn model (tests.integration.serving.predict_support) and one it refuses (422).
ROW = {"age": 75.0, "plan": "basic", "noise": 0.3}
BAD_ROW = {"plan": "basic", "noise": 0.3}


@dataclass(frozen=True)
class Outcome:
    request_id: str
    row: dict[str, Any]  # what it asked to predict
    status: int | None  # None: no answer (the connection failed or timed out)
    sent_at: float  # monotonic
    seconds: float
    code: str | None = None  # the error's code, for an error answer
    retry_after: str | None = None


class PredictLoad:
    """`threads` clients posting predictions to `deployment` as fast as they are answered, every
    `bad_every`-th with a row the model refuses, until `stop()`; after an error answer or none a
    client pauses `pause_s`, as a client honouring Retry-After would, if more briefly."""

    def __init__(
        self,
        url: str,
        key: str,
        deployment: str,
        prefix: str,
        *,
        threads: int = 4,
        bad_every: int = 10,
        timeout_s: float = 60.0,
        pause_s: float = 0.05,
    ) -> None:
        self.url = url
        self.key = key
        self.path = f"/v1/deployments/{deployment}/predict"
        self.prefix = prefix
        self.bad_every = bad_every
        self.timeout_s = timeout_s
        self.pause_s = pause_s
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> PredictLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout_s + 10)

    def count(self, status: int | None) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if o.status == status)

    def since(self, at: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.sent_at >= at]

    def _run(self, worker: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout_s) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                request_id = f"{self.prefix}-{worker}-{i}"
                row = BAD_ROW if self.bad_every and i % self.bad_every == 0 else ROW
                outcome = send(client, self.path, request_id, row)
                with self._lock:
                    self.outcomes.append(outcome)
                if outcome.status != 200:
                    self._stop.wait(self.pause_s)


def send(client: httpx.Client, path: str, request_id: str, row: dict[str, Any]) -> Outcome:
    sent_at = time.monotonic()
    try:
        response = client.post(path, json={"inputs": [row]}, headers={"X-Request-Id": request_id})
    except httpx.TransportError:
        return Outcome(request_id, row, None, sent_at, time.monotonic() - sent_at)
    seconds = time.monotonic() - sent_at
    if response.status_code == 200:
        return Outcome(request_id, row, 200, sent_at, seconds)
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = f"not our error shape: {response.text[:200]!r}"
    return Outcome(
        request_id, row, response.status_code, sent_at, seconds, code, response.headers.get("retry-after")
    )


def send_until_answered(
    client: httpx.Client, path: str, request_id: str, row: dict[str, Any], timeout_s: float = 120.0
) -> Outcome:
    """`send`, again while there is no answer or a 503 (a server starting up or loading its
    deployments says 503 with Retry-After), as a retrying client does; polled, not slept."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = send(client, path, request_id, row)
        if outcome.status not in (None, 503) or time.monotonic() > deadline:
            return outcome
        time.sleep(0.2)


def billed(platform: Platform, org_id: str) -> Counter[str]:
    """How many ledger rows each event id of `org_id` has."""
    with platform.db.read_session() as session:
        rows = session.execute(
            select(UsageRecord.event_id, func.count())
            .where(UsageRecord.org_id == org_id)
            .group_by(UsageRecord.event_id)
        ).all()
    return Counter({event_id: int(n) for event_id, n in rows})


@dataclass(frozen=True)
class Accounting:
    """The client's outcomes (the last one per request id) against the ledger's events."""

    sent: int
    served: int  # answered 200
    refused: int  # answered with an error
    unanswered: int  # no answer reached the client
    billed: int  # events of these requests
    lost: list[str]  # answered 200, no event
    duplicated: list[str]  # more than one event
    billed_refused: list[str]  # an error answer, and an event
    billed_unanswered: int  # no answer, an event (served as the server died: allowed)
    errors: Counter[str]  # the error answers, as "status code"

    def figures(self) -> dict[str, object]:
        return {
            "requests sent": self.sent,
            "answered 200": self.served,
            "refused (error answer)": self.refused,
            "no answer": self.unanswered,
            "events billed": self.billed,
            "lost (200, no event)": len(self.lost),
            "duplicated (event twice)": len(self.duplicated),
            "billed though refused": len(self.billed_refused),
            "billed, answer never arrived": self.billed_unanswered,
            "error answers": dict(self.errors),
        }


def account(outcomes: list[Outcome], events: Counter[str]) -> Accounting:
    last: dict[str, Outcome] = {}
    for outcome in outcomes:
        last[outcome.request_id] = outcome  # a retry with the same id: its answer counts
    served = [i for i, o in last.items() if o.status == 200]
    refused = [i for i, o in last.items() if o.status is not None and o.status != 200]
    unanswered = [i for i, o in last.items() if o.status is None]
    return Accounting(
        sent=len(last),
        served=len(served),
        refused=len(refused),
        unanswered=len(unanswered),
        billed=sum(1 for i in last if events[i]),
        lost=[i for i in served if events[i] == 0],
        duplicated=[i for i in last if events[i] > 1],
        billed_refused=[i for i in refused if events[i]],
        billed_unanswered=sum(1 for i in unanswered if events[i]),
        errors=Counter(f"{last[i].status} {last[i].code}" for i in refused),
    )
