"""Where an optimisation job builds its result, and the removal of what a killed job left there.

Each attempt builds in a folder of its own, `jobs/{job_id}/optimize-staging/{version_id}/`, named
by the version it is about to register, then renames the finished artifact to
`models/{org}/{version_id}` and registers the version. A folder still there names an attempt that
ended without cleaning up: killed with SIGKILL, maybe between that rename and the registration's
commit. What such an attempt left goes
- at the start of the job's next attempt (`remove_stale(..., retrying=job_id)`), and
- whenever a worker starts or any optimisation job starts, for every job no longer running:
  finished, queued, paused, or `running` on a lease that expired (its worker died).

Only what a listing showed before the job's state was read is removed, so an attempt that starts
in between keeps the folder it has just made; a `models/…` folder goes only while no version is
registered on it. No torch here: the worker and the API server import this module.
"""

from __future__ import annotations

import logging
import re
import shutil
from contextlib import suppress
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from openmaas.db.database import Database
from openmaas.jobs.tables import Job, JobStatus
from openmaas.registry.tables import ModelVersion
from openmaas.storage import ArtifactStore

log = logging.getLogger("openmaas.optimize.staging")

FOLDER = "optimize-staging"
_VERSION_ID = re.compile(r"mv_[0-9A-Za-z]+")


def attempt_dir(store: ArtifactStore, job_id: str, version_id: str) -> Path:
    """The folder an attempt registering `version_id` builds in (made here)."""
    path = store.path(f"{store.job_dir(job_id)}/{FOLDER}/{version_id}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def finish(store: ArtifactStore, job_id: str, version_id: str) -> None:
    """The attempt ended by itself (registered, or failed and cleaned up): its folder goes."""
    folder = store.path(f"{store.job_dir(job_id)}/{FOLDER}")
    shutil.rmtree(folder / version_id, ignore_errors=True)
    with suppress(OSError):  # another attempt of the job may have started meanwhile: keep it
        folder.rmdir()


def remove_stale(
    db: Database, store: ArtifactStore, now: datetime, *, retrying: str | None = None
) -> list[str]:
    """Remove the staging leftovers of every job not running now (and of `retrying`, whose new
    attempt has made nothing yet); returns the ids of the jobs cleaned."""
    root = store.path("jobs")
    found = {
        folder.parent.name: sorted(folder.iterdir())
        for folder in (root.glob(f"*/{FOLDER}") if root.is_dir() else ())
        if folder.is_dir()
    }
    if not found:
        return []
    cleaned = []
    with db.read_session() as session:
        jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(list(found))))}
        names = [entry.name for entries in found.values() for entry in entries]
        registered = set(session.scalars(select(ModelVersion.id).where(ModelVersion.id.in_(names))))
    for job_id, entries in found.items():
        job = jobs.get(job_id)
        if job is not None and job_id != retrying and _running(job, now):
            continue
        for entry in entries:
            if job is not None and entry.name not in registered and _VERSION_ID.fullmatch(entry.name):
                store.remove(store.model_dir(job.org_id, entry.name))  # renamed there, never registered
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if job is None or JobStatus(job.status).is_terminal:  # no attempt will make a folder here again
            with suppress(OSError):
                store.path(f"{store.job_dir(job_id)}/{FOLDER}").rmdir()
        if entries:
            cleaned.append(job_id)
    if cleaned:
        log.info("removed the optimisation staging left by jobs %s", ", ".join(cleaned))
    return cleaned


def _running(job: Job, now: datetime) -> bool:
    return (
        job.status == JobStatus.RUNNING.value
        and job.lease_expires_at is not None
        and job.lease_expires_at > now
    )
