"""A batch is held by one server at a time, on SQLite and PostgreSQL alike: a claim takes a batch
no live server holds (a new one becomes `in_progress`), a second server finds nothing to take,
and once the holder's lease runs out the batch is another's and the first one's writes are
refused. Cancelling names the batch's state."""

from __future__ import annotations

from datetime import timedelta

import pytest

from openmaas import errors
from openmaas.bootstrap import Platform
from openmaas.ids import new_id
from openmaas.schemas.tenancy import OrganizationCreate
from openmaas.serving.batches import service
from openmaas.serving.batches.runner import BatchRunner
from openmaas.serving.batches.tables import Batch
from openmaas.tenancy.service import create_organization


def _batch(platform: Platform) -> tuple[str, str]:
    now = platform.clock.now()
    with platform.db.session() as session:
        org = create_organization(session, OrganizationCreate(name=f"org-{new_id('t')[-6:]}"), now)
        row = Batch(
            id=new_id("batch_"), org_id=org.id, endpoint="/v1/chat/completions", input_file_id="file-x",
            completion_window="24h", model="chat", status="validating", total=3, completed=0, failed=0,
            created_at=now, expires_at=now + timedelta(hours=24),
        )  # fmt: skip
        session.add(row)
        return org.id, row.id


def _runner(platform: Platform) -> BatchRunner:
    return BatchRunner(platform.db, platform.store, platform.replicas, platform.inference, platform.clock)


def test_one_server_holds_a_batch_until_its_lease_runs_out(platform: Platform) -> None:
    org_id, batch_id = _batch(platform)
    first, second = _runner(platform), _runner(platform)
    assert first._claim(set()) == [batch_id]
    assert second._claim(set()) == []
    assert first._flush(batch_id, [(1, True, {"custom_id": "a"})]) == "in_progress"
    with platform.db.session() as session:
        row = service.get_batch(session, org_id, batch_id)
        assert (row.status, row.completed, row.runner) == ("in_progress", 1, first.id)
        assert row.in_progress_at is not None
        row.lease_until = platform.clock.now() - timedelta(seconds=1)  # its server died
    assert second._claim(set()) == [batch_id]
    assert first._flush(batch_id, [(2, True, {"custom_id": "b"})]) is None  # no longer its batch
    with platform.db.read_session() as session:
        assert service.get_batch(session, org_id, batch_id).completed == 1


def test_cancel_asks_a_running_batch_to_stop_and_refuses_an_ended_one(platform: Platform) -> None:
    org_id, batch_id = _batch(platform)
    now = platform.clock.now()
    with platform.db.session() as session:
        assert service.cancel_batch(session, org_id, batch_id, now=now).status == "cancelling"
        assert service.cancel_batch(session, org_id, batch_id, now=now).status == "cancelling"
        service.get_batch(session, org_id, batch_id).status = "completed"
    with platform.db.session() as session, pytest.raises(errors.Conflict):
        service.cancel_batch(session, org_id, batch_id, now=now)
    with platform.db.session() as session, pytest.raises(errors.NotFound):
        service.cancel_batch(session, "org_other", batch_id, now=now)
