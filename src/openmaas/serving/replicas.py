"""Replicas in this process: load a deployment's runtime off the event loop, publish it in the
served-model directory when ready, and unload it when stopped.

In embedded mode this server owns every deployment; on start it reloads those that were active.
A runtime that fails to load marks its deployment `failed` with the reason.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.registry.models import ModelVersion
from openmaas.registry.store import ArtifactStore
from openmaas.serving import service
from openmaas.serving.directory import ServedModel, ServedModels
from openmaas.serving.runtimes import load_runtime

log = logging.getLogger("openmaas.serving")


class ReplicaManager:
    def __init__(self, db: Database, store: ArtifactStore, directory: ServedModels, clock: Clock) -> None:
        self._db = db
        self._store = store
        self._directory = directory
        self._clock = clock
        # One load at a time: loading reads whole weight files and would only contend.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replica-loader")
        self._lock = threading.Lock()
        self._pending: dict[str, Future[None]] = {}

    def start(self) -> None:
        """Reload every deployment that was pending, loading or ready when the server stopped."""
        with self._db.read_session() as session:
            ids = [row.id for row in service.active(session)]
        for deployment_id in ids:
            self.load(deployment_id)

    def load(self, deployment_id: str) -> Future[None]:
        with self._lock:
            future = self._loader.submit(self._load, deployment_id)
            self._pending[deployment_id] = future
        return future

    def unload(self, org_id: str, name: str) -> None:
        served = self._directory.unregister(org_id, name)
        if served is not None and served.runtime is not None:
            served.runtime.close()

    def missing_model(self, org_id: str, name: str) -> errors.OpenMaaSError:
        """The error for a model name not in the directory: still loading (503) or unknown (404)."""
        with self._db.read_session() as session:
            row = session.scalar(
                select(service.Deployment).where(
                    service.Deployment.org_id == org_id, service.Deployment.name == name
                )
            )
        if row is not None and row.state in ("pending", "loading"):
            return errors.ServiceUnavailable(
                f"The model {name!r} is still loading; retry shortly.", retry_after=2, code="model_loading"
            )
        if row is not None and row.state == "failed":
            return errors.ServiceUnavailable(
                f"The model {name!r} failed to load: {row.error}", retry_after=30, code="model_failed"
            )
        return errors.NotFound(f"The model {name!r} does not exist.", param="model", code="model_not_found")

    def update(self, deployment_id: str, before: service.Served) -> Future[None]:
        """Load the deployment's new version beside the old, swap it in, then drain and close the old."""
        with self._lock:
            future = self._loader.submit(self._swap, deployment_id, before)
            self._pending[deployment_id] = future
        return future

    def _swap(self, deployment_id: str, before: service.Served) -> None:
        with self._db.session() as session:
            row = session.get(service.Deployment, deployment_id)
            if row is None or row.state == "stopped":
                return
            target = self._target(session, row)
        try:
            runtime = target.load()
        except Exception as exc:
            log.exception("deployment %s failed to load its update", deployment_id)
            with self._db.session() as session:
                service.revert(
                    session, deployment_id, before, self._clock.now(), f"{type(exc).__name__}: {exc}"
                )
            return
        old = self._directory.lookup(target.org_id, target.name)
        # One dict assignment: every request from here on finds the new runtime.
        self._directory.register(target.served(deployment_id, runtime))
        with self._db.session() as session:
            service.set_state(session, deployment_id, "ready", self._clock.now())
        if old is not None and old.runtime is not None and old.runtime is not runtime:
            old.runtime.close()  # drains what it had queued before it stops

    def close(self) -> None:
        self._loader.shutdown(wait=True, cancel_futures=True)
        for served in self._directory.all():
            self.unload(served.org_id, served.name)

    def _load(self, deployment_id: str) -> None:
        with self._db.session() as session:
            row = session.get(service.Deployment, deployment_id)
            if row is None or row.state == "stopped":
                return
            loaded = self._directory.lookup(row.org_id, row.name)
            if loaded is not None and loaded.deployment_id == deployment_id:
                return
            service.set_state(session, deployment_id, "loading", self._clock.now())
            target = self._target(session, row)
        try:
            runtime = target.load()
        except Exception as exc:
            log.exception("deployment %s failed to load", deployment_id)
            with self._db.session() as session:
                service.set_state(
                    session, deployment_id, "failed", self._clock.now(), f"{type(exc).__name__}: {exc}"
                )
            return
        self._directory.register(target.served(deployment_id, runtime))
        with self._db.session() as session:
            service.set_state(session, deployment_id, "ready", self._clock.now())
            still_wanted = session.get(service.Deployment, deployment_id)
            stopped = still_wanted is None or still_wanted.state == "stopped"
        if stopped:  # stopped or deleted while it loaded
            self.unload(target.org_id, target.name)

    def _target(self, session: Session, row: service.Deployment) -> _Target:
        version = session.get(ModelVersion, row.version_id)
        return _Target(
            org_id=row.org_id,
            name=row.name,
            task=row.task,
            config=_runtime_config(session, row, version),
            created=int(row.created_at.timestamp()),
            version_id=row.version_id,
            folder=self._store.path(version.artifact_path) if version is not None else None,
        )


@dataclass(frozen=True)
class _Target:
    """What loading one deployment's runtime needs, read in one transaction."""

    org_id: str
    name: str
    task: str
    config: dict[str, Any]
    created: int
    version_id: str
    folder: Path | None

    def load(self) -> Any:
        """Build the runtime (slow: reads the weights)."""
        if self.folder is None:
            raise FileNotFoundError("the model version was deleted")
        return load_runtime(self.task, self.folder, self.config)

    def served(self, deployment_id: str, runtime: Any) -> ServedModel:
        return ServedModel(
            name=self.name,
            org_id=self.org_id,
            owner=self.org_id,
            created=self.created,
            deployment_id=deployment_id,
            version_id=self.version_id,
            runtime=runtime,
        )


def _runtime_config(
    session: Session, row: service.Deployment, version: ModelVersion | None
) -> dict[str, Any]:
    """The deployment's settings plus what a runtime reports: its replica count and version."""
    ref = service.version_ref(session, version) if version is not None else ""
    return {**row.config, "replicas": row.replicas, "model_version": ref}
