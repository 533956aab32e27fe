"""Every job state change is a line in the server log, once its transaction commits: created,
started, retried, failed, cancelled; nothing for a change that was rolled back."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from openmaas.bootstrap import Platform
from openmaas.jobs import queue
from openmaas.jobs.tables import JobStatus
from openmaas.logs import Event
from tests.integration.billing.helpers import make_org


class _Params(BaseModel):
    epochs: int = 1


def _job_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {"level": r.levelname, **r.msg.fields}
        for r in caplog.records
        if isinstance(r.msg, Event) and r.msg.name == "job_status"
    ]


def test_job_state_changes_are_logged_when_they_commit(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openmaas.jobs")
    org = make_org(platform, "acme")
    now, lease = platform.clock.now(), timedelta(seconds=30)
    with pytest.raises(RuntimeError), platform.db.session() as session:
        queue.enqueue(session, org_id=org, kind="train", params=_Params(), now=now, max_attempts=2)
        raise RuntimeError("the request failed after enqueueing: rolled back")
    assert _job_lines(caplog) == []

    with platform.db.session() as session:
        job_id = queue.enqueue(
            session, org_id=org, kind="train", params=_Params(), now=now, max_attempts=2
        ).id
        assert _job_lines(caplog) == []  # not committed yet
    for _ in range(2):  # two attempts, both failing
        with platform.db.session() as session:
            claim = queue.claim_next(session, owner="w", now=now, lease=lease, org_limit=5)
            assert claim is not None
        with platform.db.session() as session:
            queue.after_exit(session, claim, exit_code=1, now=now, releasing=False)
    with platform.db.session() as session:
        other = queue.enqueue(session, org_id=org, kind="optimize", params=_Params(), now=now, max_attempts=1)
        queue.request_cancel(session, other, now=now)
        other_id = other.id

    lines = _job_lines(caplog)
    mine = [(line["status"], line["attempt"], line["level"]) for line in lines if line["job_id"] == job_id]
    assert mine == [
        ("queued", 0, "INFO"),
        ("running", 1, "INFO"),
        ("queued", 1, "WARNING"),  # attempt 1 failed: retried
        ("running", 2, "INFO"),
        ("failed", 2, "ERROR"),
    ]
    assert all((line["org_id"], line["kind"]) == (org, "train") for line in lines if line["job_id"] == job_id)
    failed = [line for line in lines if line["job_id"] == job_id and line["status"] == "failed"]
    assert "exited with code 1" in failed[0]["message"]
    cancelled = [line["status"] for line in lines if line["job_id"] == other_id]
    assert cancelled == [JobStatus.QUEUED.value, JobStatus.CANCELLED.value]
