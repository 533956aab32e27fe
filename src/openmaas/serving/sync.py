"""Deployments shared by several API servers: each server follows the `deployments` table.

A server loads the active deployments when it starts (`ReplicaManager.start`); a deployment created,
updated, stopped or deleted through another server reaches this one through `DeploymentSync`, a
background thread that every `interval_s` (1 s by default) reads each deployment's id and
`updated_at` — one narrow query, never on a request's path — and, for the rows that changed or went,
reads them and reconciles this server's replicas:

- a new active deployment is loaded here (as an on-demand load: the row's state stays what the
  server that made it reports; `min_replicas: 0` ones wait for their first request);
- one whose model, traffic or settings changed rolls to them (`ReplicaManager.update`, rolling);
- one stopped or deleted is unloaded.

State changes alone (`loading` → `ready`, written by whichever server loads) change nothing here.
A change made through this server is applied by its own route; the route marks it
(`local_change`) so the thread adopts it instead of applying it a second time. A request that
arrives before the thread has caught up is answered by `ReplicaManager.missing_model`: a model that
exists starts loading here and answers 503 `model_loading` with Retry-After, never 404.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from openmaas.db.database import Database
from openmaas.serving import service
from openmaas.serving.deployment_config import DeploymentConfig
from openmaas.serving.directory import ServedModels
from openmaas.serving.replicas import ReplicaManager
from openmaas.serving.tables import Deployment

log = logging.getLogger("openmaas.serving")

_CHUNK = 500  # changed rows read per query


@dataclass(frozen=True, slots=True)
class _Seen:
    updated_at: datetime
    org_id: str
    name: str


@dataclass(frozen=True, slots=True)
class _Row:
    id: str
    org_id: str
    name: str
    state: str
    updated_at: datetime
    served: service.Served  # what it asks a server to serve: an update changes it

    @classmethod
    def of(cls, row: Deployment) -> _Row:
        config = DeploymentConfig.from_stored(row.config)
        served = service.Served(row.model_ref, row.version_id, row.task, row.replicas, config)
        return cls(row.id, row.org_id, row.name, row.state, row.updated_at, served)


class DeploymentSync:
    def __init__(
        self, db: Database, replicas: ReplicaManager, directory: ServedModels, *, interval_s: float
    ) -> None:
        self._db = db
        self._replicas = replicas
        self._directory = directory
        self._interval_s = interval_s
        self._seen: dict[str, _Seen] = {}
        self._serving: dict[str, service.Served] = {}  # what this server was asked to serve
        self._lock = threading.Lock()
        self._local: dict[tuple[str, str], int] = {}  # (org, id or name) changing here → depth
        self._adopt: set[tuple[str, str]] = set()  # changed here: take the row as it is next seen
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the table as this server loaded it (call after `ReplicaManager.start`), then
        follow it in the background (unless `interval_s` is 0)."""
        self._snapshot()
        if self._interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="deployment-sync", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @contextmanager
    def local_change(self, org_id: str, id_or_name: str) -> Iterator[None]:
        """Around a change this server applies itself (an update's roll): the thread leaves the
        deployment alone meanwhile and then adopts the row as changed, instead of rolling again."""
        key = (org_id, id_or_name)
        with self._lock:
            self._local[key] = self._local.get(key, 0) + 1
        try:
            yield
            with self._lock:
                self._adopt.add(key)
        finally:
            with self._lock:
                depth = self._local.pop(key) - 1
                if depth:
                    self._local[key] = depth

    def poll(self) -> None:
        """One round: read what changed and reconcile this server's replicas with it."""
        with self._db.read_session() as session:
            current = {i: at for i, at in session.execute(select(Deployment.id, Deployment.updated_at))}
            seen = self._seen
            changed = [i for i, at in current.items() if i not in seen or seen[i].updated_at != at]
            rows: list[_Row] = []
            for start in range(0, len(changed), _CHUNK):
                chunk = changed[start : start + _CHUNK]
                rows.extend(map(_Row.of, session.scalars(select(Deployment).where(Deployment.id.in_(chunk)))))
        for gone in [i for i in self._seen if i not in current]:
            self._gone(gone)
        for row in rows:
            self._changed(row)

    def _snapshot(self) -> None:
        with self._db.read_session() as session:
            for row in map(_Row.of, session.scalars(select(Deployment))):
                self._seen[row.id] = _Seen(row.updated_at, row.org_id, row.name)
                if row.state in service.ACTIVE_STATES:
                    self._serving[row.id] = row.served

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.poll()
            except Exception:
                log.exception("following the deployments table failed; retrying")

    def _gone(self, deployment_id: str) -> None:
        seen = self._seen.pop(deployment_id)
        self._serving.pop(deployment_id, None)
        if self._replicas.loaded_deployment(seen.org_id, seen.name) in (deployment_id, None):
            self._replicas.unload(seen.org_id, seen.name, "deleted")  # also forgets it if idle

    def _changed(self, row: _Row) -> None:
        keys = {(row.org_id, row.id), (row.org_id, row.name)}
        with self._lock:
            if keys & self._local.keys():
                return  # changing here right now: looked at again next round
            adopted = bool(keys & self._adopt)
            self._adopt -= keys
        self._seen[row.id] = _Seen(row.updated_at, row.org_id, row.name)
        if row.state not in service.ACTIVE_STATES:
            self._serving.pop(row.id, None)
            stopped = row.state == "stopped"
            if stopped and self._replicas.loaded_deployment(row.org_id, row.name) in (row.id, None):
                self._replicas.unload(row.org_id, row.name, "stopped")
            return
        wanted = row.served
        before = self._serving.get(row.id)
        self._serving[row.id] = wanted
        if adopted or before == wanted:
            return
        loaded = self._replicas.loaded_deployment(row.org_id, row.name) == row.id
        if not loaded:
            if self._replicas.is_cold(row.org_id, row.name):
                return  # this server unloaded it (idle, or evicted for memory): on demand, as usual
            if row.state != "ready" or wanted.config.min_replicas > 0:
                log.info("loading deployment %s (%s), made through another server", row.name, row.id)
                self._replicas.ensure_loaded(row.id)
            return
        # Loaded here before this thread first saw it (a request woke it), from the row as it was
        # then: an update since shows in its versions (settings alone do not).
        if before is None and not self._versions_differ(row):
            return
        log.info("rolling deployment %s (%s) to its update made through another server", row.name, row.id)
        # A roll that fails here leaves the row as it is (`before` is what it asks for): the
        # server that made the update reports its own outcome.
        self._replicas.update(row.id, wanted, "rolling")

    def _versions_differ(self, row: _Row) -> bool:
        """Whether the versions this server serves for `row` are not the row's."""
        served = self._directory.lookup(row.org_id, row.name)
        if served is None:
            return False
        loaded = tuple(m.version_id for m in served.routes or (served,))
        routes = row.served.config.traffic
        return loaded != (tuple(r.version_id for r in routes) if routes else (row.served.version_id,))
