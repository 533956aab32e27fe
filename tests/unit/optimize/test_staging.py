"""What optimisation attempts killed outright leave in the artifact store goes: staging folders of
jobs no longer running (finished, queued, paused, or on an expired lease) and artifacts renamed
into `models/` but never registered; a running job's staging and registered artifacts stay."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from openmaas.bootstrap import Platform
from openmaas.ids import new_id
from openmaas.jobs.tables import Job, JobStatus
from openmaas.optimize import staging
from openmaas.registry import service as registry
from openmaas.tenancy.tables import Organization
from tests.support.platforms import make_platform

ORG = "org_a"


@pytest.fixture
def plat(tmp_path: Path, database_url: str) -> Iterator[Platform]:
    platform = make_platform(tmp_path / "home", database_url)
    with platform.db.session() as session:
        session.add(Organization(id=ORG, name=ORG, plan="default", created_at=platform.clock.now()))
    yield platform
    platform.close()


def _job(plat: Platform, status: JobStatus, lease_s: float | None = None) -> str:
    now = plat.clock.now()
    job = Job(
        id=new_id("job_"),
        org_id=ORG,
        kind="optimize",
        status=status.value,
        params={},
        attempts=1,
        max_attempts=2,
        cancel_requested=False,
        pause_requested=False,
        lease_owner="host:1:wrk" if lease_s is not None else None,
        lease_expires_at=now + timedelta(seconds=lease_s) if lease_s is not None else None,
        created_at=now,
    )
    with plat.db.session() as session:
        session.add(job)
    return job.id


def _killed_attempt(plat: Platform, job_id: str, *, renamed: bool = False) -> tuple[Path, Path]:
    """What an attempt killed mid-build leaves: its staging (and, past the rename, its artifact)."""
    version_id = new_id("mv_")
    staging.mark(plat.store, job_id, version_id)
    attempt = plat.store.path(f"jobs/{job_id}/{staging.FOLDER}/{version_id}")
    artifact = plat.store.path(plat.store.model_dir(ORG, version_id))
    if renamed:
        artifact.mkdir(parents=True)
        (artifact / "manifest.json").write_text("{}")
    return attempt, artifact


def test_leftovers_of_jobs_no_longer_running_go(plat: Platform) -> None:
    failed = _job(plat, JobStatus.FAILED)
    queued = _job(plat, JobStatus.QUEUED)
    expired = _job(plat, JobStatus.RUNNING, lease_s=-1)  # its worker died: nobody renews the lease
    running = _job(plat, JobStatus.RUNNING, lease_s=60)
    stale = {job: _killed_attempt(plat, job, renamed=job == failed) for job in (failed, queued, expired)}
    kept = _killed_attempt(plat, running)

    cleaned = staging.remove_stale(plat.db, plat.store, plat.clock.now())

    assert sorted(cleaned) == sorted([failed, queued, expired])
    for attempt, artifact in stale.values():
        assert not attempt.exists() and not artifact.exists()
    assert kept[0].is_file()
    # A finished job gets no more attempts: its staging folder goes too.
    assert not attempt_root(plat, failed).exists() and attempt_root(plat, queued).is_dir()
    assert staging.remove_stale(plat.db, plat.store, plat.clock.now()) == []


def attempt_root(plat: Platform, job_id: str) -> Path:
    return plat.store.path(f"jobs/{job_id}/{staging.FOLDER}")


def test_a_retry_clears_its_own_job_and_a_registered_artifact_stays(plat: Platform) -> None:
    job = _job(plat, JobStatus.RUNNING, lease_s=60)  # the new attempt holds the lease
    attempt, artifact = _killed_attempt(plat, job, renamed=True)
    version_id = attempt.name
    # Killed after the registration committed, before it removed its folder: the version stays.
    with plat.db.session() as session:
        registry.register_version(
            session,
            version_id=version_id,
            org_id=ORG,
            model_name="churn",
            artifact_path=plat.store.model_dir(ORG, version_id),
            manifest={"task": "tabular-classification"},
            lineage={"job_id": job},
            now=plat.clock.now(),
        )
    assert staging.remove_stale(plat.db, plat.store, plat.clock.now()) == []  # running: kept
    assert attempt.is_file()

    assert staging.remove_stale(plat.db, plat.store, plat.clock.now(), retrying=job) == [job]
    assert not attempt.exists()
    assert (artifact / "manifest.json").is_file()


def test_an_attempt_that_ends_by_itself_leaves_nothing(plat: Platform) -> None:
    job = _job(plat, JobStatus.RUNNING, lease_s=60)
    version_id = new_id("mv_")
    staging.mark(plat.store, job, version_id)
    staging.finish(plat.store, job, version_id)
    assert not attempt_root(plat, job).exists()
