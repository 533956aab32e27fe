"""The marks of optimisation attempts in progress, and the removal of what a killed one left.

Each attempt marks itself in the artifact store with `jobs/{job_id}/optimize-staging/{version_id}`
(`mark`), named by the version it is about to register, then builds in the private scratch of a
staged `models/{org}/{version_id}` (published when the build succeeds) and registers the version.
A mark still there names an attempt that ended without cleaning up: killed with SIGKILL, maybe
between the publication and the registration's commit. What such an attempt left goes
- at the start of the job's next attempt (`remove_stale(..., retrying=job_id)`), and
- whenever a worker starts or any optimisation job starts, for every job no longer running:
  finished, queued, paused, or `running` on a lease that expired (its worker died).
(The build's scratch itself goes with `ArtifactStore.clear_abandoned`: its process is gone.)

Only what a listing showed before the job's state was read is removed, so an attempt that starts
in between keeps the mark it has just made; a `models/…` folder goes only while no version is
registered on it. No torch here: the worker and the API server import this module.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from sqlalchemy import select

from openmaas.db.database import Database
from openmaas.jobs.tables import Job, JobStatus
from openmaas.registry.tables import ModelVersion
from openmaas.storage import ArtifactStore

log = logging.getLogger("openmaas.optimize.staging")

FOLDER = "optimize-staging"
_VERSION_ID = re.compile(r"mv_[0-9A-Za-z]+")


def _marks(store: ArtifactStore, job_id: str) -> str:
    return f"{store.job_dir(job_id)}/{FOLDER}"


def mark(store: ArtifactStore, job_id: str, version_id: str) -> None:
    """Mark an attempt about to build and register `version_id`."""
    with store.staged(f"{_marks(store, job_id)}/{version_id}") as path:
        path.write_bytes(b"")


def finish(store: ArtifactStore, job_id: str, version_id: str) -> None:
    """The attempt ended by itself (registered, or failed and cleaned up): its mark goes."""
    store.remove(f"{_marks(store, job_id)}/{version_id}")
    if not store.listdir(_marks(store, job_id)):  # another attempt of the job may have marked since
        store.remove(_marks(store, job_id))


def remove_stale(
    db: Database, store: ArtifactStore, now: datetime, *, retrying: str | None = None
) -> list[str]:
    """Remove what the attempts of every job not running now (and of `retrying`, whose new attempt
    has made nothing yet) left; returns the ids of the jobs cleaned."""
    found = {
        job_id: entries
        for job_id in store.listdir("jobs")
        if (entries := store.listdir(_marks(store, job_id)))
    }
    if not found:
        return []
    cleaned = []
    with db.read_session() as session:
        jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(list(found))))}
        names = [entry for entries in found.values() for entry in entries]
        registered = set(session.scalars(select(ModelVersion.id).where(ModelVersion.id.in_(names))))
    for job_id, entries in found.items():
        job = jobs.get(job_id)
        if job is not None and job_id != retrying and _running(job, now):
            continue
        for entry in entries:
            if job is not None and entry not in registered and _VERSION_ID.fullmatch(entry):
                store.remove(store.model_dir(job.org_id, entry))  # published, never registered
            store.remove(f"{_marks(store, job_id)}/{entry}")
        if job is None or JobStatus(job.status).is_terminal:  # no attempt will mark here again
            store.remove(_marks(store, job_id))
        cleaned.append(job_id)
    if cleaned:
        log.info("removed the optimisation leftovers of jobs %s", ", ".join(cleaned))
    return cleaned


def _running(job: Job, now: datetime) -> bool:
    return (
        job.status == JobStatus.RUNNING.value
        and job.lease_expires_at is not None
        and job.lease_expires_at > now
    )
