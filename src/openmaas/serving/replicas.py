"""Replicas in this process: load a deployment's runtimes off the event loop, publish them in the
served-model directory when ready, and unload them when stopped, idle or evicted.

In embedded mode this server owns every deployment; on start it reloads those that were active
(those that scale to zero wait for their first request). A runtime that fails to load marks its
deployment `failed` with the reason. Loaded deployments stay within the serving memory budget:
before a load that would not fit, the least recently used idle ones are unloaded (replicas on Ray:
idle `min_replicas: 0` deployments on Ray, until each new replica has a node with room). A deployment
unloaded for being idle (`min_replicas: 0`) or evicted stays `ready`; `acquire` loads it again on
its next request, once however many requests wait for it. Every load, unload and sweep runs on
the one loader thread, so they never race each other.

An update rolls (`update`): the new runtimes load beside the old, one directory assignment switches
new requests to them, and the old finish their running requests on a drain thread before they
close (`draining.py`); or, asked to `recreate`, the old stop taking requests at once and the new
load once they have closed. Each step is a deployment event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas import errors, logs
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.registry.tables import ModelVersion
from openmaas.serving import memory, service
from openmaas.serving.deployment_config import DeploymentConfig
from openmaas.serving.directory import ServedModel, ServedModels
from openmaas.serving.draining import Drain, Drains
from openmaas.serving.loading import Target, build_target
from openmaas.serving.memory import InsufficientMemory
from openmaas.serving.placement import require_ray
from openmaas.storage import ArtifactStore

log = logging.getLogger("openmaas.serving")

Key = tuple[str, str]  # (org id, deployment name)


@dataclass(frozen=True)
class _Resident:
    """A loaded deployment as the budget and the idle sweep see it."""

    deployment_id: str
    key: Key
    size_bytes: int
    min_replicas: int
    idle_timeout_s: float
    versions: str  # `name:N` of what it serves (several for a split), for the events
    on_ray: bool  # its replicas are Ray actors (room for them is per node, not this budget)


class ReplicaManager:
    def __init__(
        self,
        db: Database,
        store: ArtifactStore,
        directory: ServedModels,
        clock: Clock,
        *,
        memory_budget_bytes: int | None = None,
        cold_start_wait_s: float = 30.0,
        sweep_interval_s: float = 5.0,
        drain_timeout_s: float = 600.0,
        ray_address: str | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._directory = directory
        self._clock = clock
        self._budget = memory_budget_bytes
        self._cold_start_wait_s = cold_start_wait_s
        self._sweep_interval_s = sweep_interval_s
        # One load at a time: loading reads whole weight files and would only contend.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replica-loader")
        self._lock = threading.Lock()
        self._pending: dict[str, Future[None]] = {}
        self._resident: dict[str, _Resident] = {}
        # Unloaded while idle or evicted (its entry, without a runtime): loads again on its next request.
        self._cold: dict[Key, ServedModel] = {}
        self._last_used: dict[Key, float] = {}
        self.rng = random.Random()  # draws traffic-split routes; tests seed it
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None
        # Replaced runtimes finishing their requests; past the timeout they are cut off.
        self._drains = Drains(drain_timeout_s)
        self._ray_address = ray_address  # where `placement: ray` replicas run (None: nowhere)

    def start(self) -> None:
        """Reload the deployments that were pending, loading or ready when the server stopped,
        and start the idle sweep."""
        with self._db.read_session() as session:
            rows = [
                (r.id, _cold_entry(r), r.state, DeploymentConfig.from_stored(r.config))
                for r in service.active(session)
            ]
        for deployment_id, entry, state, config in rows:
            if state == "ready" and config.min_replicas == 0:
                with self._lock:
                    self._cold[(entry.org_id, entry.name)] = entry
            else:
                self.load(deployment_id)
        if self._sweep_interval_s > 0 and self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="replica-sweeper", daemon=True)
            self._sweeper.start()

    async def acquire(self, org_id: str, name: str, *, cold_start: bool = True) -> ServedModel:
        """The model that answers this request: loaded (a dict lookup), or loaded now if it was
        unloaded while idle (without `cold_start`: 503 while it loads); for a traffic split, one
        version drawn by weight."""
        served = self._directory.lookup(org_id, name)
        if served is None:
            if not cold_start:
                raise self.missing_model(org_id, name)
            served = await self._cold_start(org_id, name)
        return self._picked(org_id, name, served)

    def acquire_loaded(self, org_id: str, name: str) -> ServedModel | None:
        """`acquire` without the wait: None when the deployment is not loaded (call `acquire`)."""
        served = self._directory.lookup(org_id, name)
        return None if served is None else self._picked(org_id, name, served)

    def _picked(self, org_id: str, name: str, served: ServedModel) -> ServedModel:
        self._last_used[(org_id, name)] = self._clock.monotonic()
        return served.pick(self.rng.random() * 100) if served.routes else served

    def load(self, deployment_id: str) -> Future[None]:
        with self._lock:
            future = self._loader.submit(self._load, deployment_id)
            self._pending[deployment_id] = future
        return future

    def update(self, deployment_id: str, before: service.Served, strategy: str = "rolling") -> Future[None]:
        """Serve the deployment's updated row: `rolling` loads the new version(s) beside the old,
        switches to them, then drains and closes the old; `recreate` stops the old first (from
        now on its requests answer 503 with Retry-After) and loads the new once they have closed."""
        drain = self._stop_for_recreate(deployment_id) if strategy == "recreate" else None
        with self._lock:
            if drain is None:
                future = self._loader.submit(self._swap, deployment_id, before)
            else:
                future = self._loader.submit(self._recreate, deployment_id, before, drain)
            self._pending[deployment_id] = future
        return future

    def require_placement(self, placement: str) -> None:
        """422 naming `placement` when this server cannot place replicas there."""
        if placement == "ray":
            require_ray(self._ray_address)

    def check_room(self, session: Session, row: service.Deployment, strategy: str) -> None:
        """Raise `insufficient_memory` (409) when the update of `row` (already changed, not yet
        committed) cannot start: a rolling one needs room for the old and the new at once, a
        recreate one for the new alone."""
        if self._budget is None:
            return
        target = self._target(session, row)
        replacing = strategy == "recreate"
        residents = self._budget_view(target, replacing=replacing)
        if memory.choose_evictions(residents, target.size_bytes, self._budget) is not None:
            return
        old = self._resident.get(row.id)
        new = ", ".join(route.ref for route in target.routes)
        used_mb = sum(r.size_bytes for r in residents) / memory.MIB
        budget = f"the serving memory budget of {self._budget / memory.MIB:.2f} MB ({used_mb:.2f} MB in use)"
        if replacing or old is None:
            raise errors.Conflict(
                f"{new} needs {target.size_bytes / memory.MIB:.2f} MB, more than {budget} leaves free "
                "even without the version it replaces; raise serving_memory_budget_mb or stop other "
                "deployments.",
                param="model",
                code="insufficient_memory",
            )
        raise errors.Conflict(
            f"{new} ({target.size_bytes / memory.MIB:.2f} MB) cannot start beside {old.versions} "
            f"({old.size_bytes / memory.MIB:.2f} MB) within {budget}, so it cannot roll without "
            'downtime. Send the update again with "strategy": "recreate" to stop '
            f"{old.versions} first (requests answer 503 with Retry-After until {new} is ready), "
            "or raise serving_memory_budget_mb.",
            param="strategy",
            code="insufficient_memory",
        )

    def memory_in_use(self) -> int:
        """The bytes the budget counts: loaded deployments and replaced runtimes still draining."""
        with self._lock:
            loaded = sum(r.size_bytes for r in self._resident.values())
        return loaded + self._drains.held()

    def loaded_version(self, org_id: str, name: str) -> str | None:
        """The version id this server serves for a deployment now (for a split, its first), or None."""
        served = self._directory.lookup(org_id, name)
        return None if served is None else served.version_id

    def loaded_deployment(self, org_id: str, name: str) -> str | None:
        """The id of the deployment this server serves under that name now, or None."""
        served = self._directory.lookup(org_id, name)
        return None if served is None else served.deployment_id

    def ensure_loaded(self, deployment_id: str) -> Future[None]:
        """Load a deployment another API server made or woke, as on demand: its state stays what
        that server reports (`serving.sync`)."""
        return self._wake(deployment_id)

    def sweep(self) -> Future[None]:
        """Unload the deployments with `min_replicas: 0` idle past their timeout (none in flight)."""
        return self._loader.submit(self._sweep)

    def is_loaded(self, org_id: str, name: str) -> bool:
        return self._directory.lookup(org_id, name) is not None

    def cold_models(self, org_id: str) -> list[ServedModel]:
        """The organisation's deployments unloaded while idle or evicted (entries without a
        runtime): callable, they load on their next request, so `/v1/models` lists them too."""
        with self._lock:
            return [entry for (org, _), entry in self._cold.items() if org == org_id]

    def is_cold(self, org_id: str, name: str) -> bool:
        """Unloaded here while idle or evicted for memory: it loads again on its next request."""
        with self._lock:
            return (org_id, name) in self._cold

    def unload(self, org_id: str, name: str, reason: str = "stopped") -> None:
        key = (org_id, name)
        with self._lock:
            self._cold.pop(key, None)
            self._last_used.pop(key, None)
            for deployment_id in [d for d, r in self._resident.items() if r.key == key]:
                del self._resident[deployment_id]
        served = self._directory.unregister(org_id, name)
        if served is not None:
            _close(served.runtimes())
            logs.event(
                log,
                "deployment_unloaded",
                deployment_id=served.deployment_id,
                org_id=org_id,
                deployment=name,
                reason=reason,
            )

    def missing_model(self, org_id: str, name: str) -> errors.OpenMaaSError:
        """The error for a model name not in the directory: still loading (503) or unknown (404).
        One unloaded while idle starts loading (routes that cannot wait for it answer 503)."""
        cold = self._cold.get((org_id, name))
        if cold is not None:
            self._wake(cold.deployment_id)
            return errors.ServiceUnavailable(
                f"The model {name!r} is starting after being idle; retry shortly.",
                retry_after=2,
                code="model_loading",
            )
        with self._db.read_session() as session:
            row = session.scalar(
                select(service.Deployment).where(
                    service.Deployment.org_id == org_id, service.Deployment.name == name
                )
            )
        if row is not None and row.state in ("pending", "loading", "ready"):
            if row.state == "ready":  # made or woken through another API server: load it here too
                self._wake(row.id)
            return errors.ServiceUnavailable(
                f"The model {name!r} is still loading; retry shortly.", retry_after=2, code="model_loading"
            )
        if row is not None and row.state == "failed":
            return errors.ServiceUnavailable(
                f"The model {name!r} failed to load: {row.error}", retry_after=30, code="model_failed"
            )
        return errors.NotFound(f"The model {name!r} does not exist.", param="model", code="model_not_found")

    def close(self) -> None:
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.join()
        self._loader.shutdown(wait=True, cancel_futures=True)
        self._drains.close()
        for served in self._directory.all():
            self.unload(served.org_id, served.name, "shutdown")

    # Cold starts: on the event loop.

    async def _cold_start(self, org_id: str, name: str) -> ServedModel:
        cold = self._cold.get((org_id, name))
        if cold is None:
            raise self.missing_model(org_id, name)
        future = self._wake(cold.deployment_id)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self._cold_start_wait_s)
        except TimeoutError:
            raise errors.ServiceUnavailable(
                f"The model {name!r} is starting after being idle; retry shortly.",
                retry_after=max(1, math.ceil(self._cold_start_wait_s)),
                code="model_loading",
            ) from None
        served = self._directory.lookup(org_id, name)
        if served is None:
            raise self.missing_model(org_id, name)
        return served

    def _wake(self, deployment_id: str) -> Future[None]:
        """The load of an unloaded deployment: started by the first request to find it cold and
        shared by every request that finds it so until it is loaded."""
        with self._lock:
            future = self._pending.get(deployment_id)
            if future is None or future.done():
                future = self._loader.submit(self._load, deployment_id, True)
                self._pending[deployment_id] = future
        return future

    # The loader thread only, below.

    def _load(self, deployment_id: str, cold: bool = False) -> None:
        with self._db.session() as session:
            row = session.get(service.Deployment, deployment_id)
            if row is None or row.state == "stopped" or deployment_id in self._resident:
                return
            if not cold:
                service.set_state(session, deployment_id, "loading", self._clock.now())
            target = self._target(session, row)
        started = self._clock.monotonic()
        try:
            self._make_room(target)
            runtimes = target.load()
        except Exception as exc:
            self._load_failed(target, exc, cold)
            if cold and isinstance(exc, InsufficientMemory):
                raise  # the waiting requests answer 503 with it; the deployment stays ready
            return
        self._install(target, runtimes)
        with self._db.session() as session:
            now = self._clock.now()
            if cold:
                seconds = self._clock.monotonic() - started
                service.add_event(
                    session, deployment_id, "cold_start", f"loaded on demand in {seconds:.2f} s", now
                )
            else:
                service.set_state(session, deployment_id, "ready", now)
            still_wanted = session.get(service.Deployment, deployment_id)
            stopped = still_wanted is None or still_wanted.state == "stopped"
        _loaded_event(target, "deployment_loaded", self._clock.monotonic() - started, cold=cold)
        if stopped:  # stopped or deleted while it loaded
            self.unload(target.org_id, target.name)

    def _load_failed(self, target: Target, exc: Exception, cold: bool) -> None:
        reason = str(exc) if isinstance(exc, InsufficientMemory) else f"{type(exc).__name__}: {exc}"
        fields: dict[str, Any] = {
            "deployment_id": target.deployment_id,
            "org_id": target.org_id,
            "deployment": target.name,
            "reason": reason,
        }
        with self._db.session() as session:
            if cold and isinstance(exc, InsufficientMemory):
                service.add_event(
                    session, target.deployment_id, "cold_start_failed", reason, self._clock.now()
                )
                logs.event(log, "deployment_cold_start_failed", level=logging.WARNING, **fields)
                return
            logs.event(log, "deployment_failed", level=logging.ERROR, exc_info=exc, **fields)
            service.set_state(session, target.deployment_id, "failed", self._clock.now(), reason)
        with self._lock:
            self._cold.pop(target.key, None)

    def _swap(self, deployment_id: str, before: service.Served) -> None:
        with self._db.session() as session:
            row = session.get(service.Deployment, deployment_id)
            if row is None or row.state == "stopped":
                return
            target = self._target(session, row)
            old = self._resident.get(deployment_id)
            beside = f" beside {old.versions}" if old is not None else ""
            service.add_event(
                session, deployment_id, "starting", f"starting {_versions(target)}{beside}", self._clock.now()
            )
        try:
            self._make_room(target)
            runtimes = target.load()
        except Exception as exc:
            self._update_failed(target, before, exc)
            return
        served = self._directory.lookup(target.org_id, target.name)
        # One dict assignment: every request from here on finds the new runtimes.
        self._install(target, runtimes)
        with self._db.session() as session:
            service.switched(
                session, deployment_id, self._clock.now(), f"new requests go to {_versions(target)}"
            )
        _loaded_event(target, "deployment_updated", None)
        if served is not None and old is not None:
            replaced = [r for r in served.runtimes() if not any(r is new for new in runtimes)]
            drain = Drain(deployment_id, old.versions, old.size_bytes, replaced)
            self._draining_event(drain, "takes no new requests and finishes its")
            self._drains.start(drain, self._retired)

    def _stop_for_recreate(self, deployment_id: str) -> Drain | None:
        """Take the deployment out of the directory (its requests answer 503 while it is updated)
        and start draining what it served; None when nothing was loaded."""
        with self._lock:
            old = self._resident.pop(deployment_id, None)
        if old is None:
            return None
        served = self._directory.unregister(*old.key)
        drain = Drain(deployment_id, old.versions, old.size_bytes, served.runtimes() if served else [])
        self._draining_event(
            drain, "stops first (requests answer 503 until the new version is ready); it finishes its"
        )
        self._drains.start(drain, self._retired)
        return drain

    def _recreate(self, deployment_id: str, before: service.Served, drain: Drain) -> None:
        drain.done.wait()  # its memory is free once it has closed
        with self._db.session() as session:
            row = session.get(service.Deployment, deployment_id)
            if row is None or row.state == "stopped":
                return
            target = self._target(session, row)
            service.add_event(
                session, deployment_id, "starting", f"starting {_versions(target)}", self._clock.now()
            )
        try:
            self._make_room(target)
            runtimes = target.load()
        except Exception as exc:
            self._update_failed(target, before, exc)
            self._load(deployment_id)  # what it served before, again
            return
        self._install(target, runtimes)
        with self._db.session() as session:
            service.set_state(session, deployment_id, "ready", self._clock.now())
        _loaded_event(target, "deployment_updated", None)

    def _update_failed(self, target: Target, before: service.Served, exc: Exception) -> None:
        reason = str(exc) if isinstance(exc, InsufficientMemory) else f"{type(exc).__name__}: {exc}"
        logs.event(
            log,
            "deployment_update_failed",
            level=logging.ERROR,
            exc_info=exc,
            deployment_id=target.deployment_id,
            org_id=target.org_id,
            deployment=target.name,
            reason=reason,
        )
        with self._db.session() as session:
            service.revert(session, target.deployment_id, before, self._clock.now(), reason)

    def _draining_event(self, drain: Drain, what: str) -> None:
        with self._db.session() as session:
            message = f"{drain.versions} {what} {drain.running} running request(s)"
            service.add_event(session, drain.deployment_id, "draining", message, self._clock.now())

    def _retired(self, drain: Drain, cut_off: bool) -> None:
        """A drain thread closed replaced runtimes: record it (the deployment may be gone)."""
        message = f"{drain.versions} stopped; {drain.size_bytes / memory.MIB:.2f} MB freed"
        if cut_off:
            message += " (requests still running past the drain timeout were cut off)"
        try:
            with self._db.session() as session:
                if session.get(service.Deployment, drain.deployment_id) is not None:
                    service.add_event(session, drain.deployment_id, "stopped_old", message, self._clock.now())
        except Exception:
            log.exception("recording a drained runtime failed")

    def _install(self, target: Target, runtimes: list[Any]) -> None:
        config = target.config
        resident = _Resident(
            target.deployment_id,
            target.key,
            target.size_bytes,
            config.min_replicas,
            config.idle_timeout_s,
            _versions(target),
            config.placement == "ray",
        )
        with self._lock:
            self._last_used[target.key] = self._clock.monotonic()
            self._resident[target.deployment_id] = resident
            self._cold.pop(target.key, None)
        self._directory.register(target.served(runtimes))

    def _make_room(self, target: Target) -> None:
        """Unload least recently used idle deployments until `target` fits the budget (on Ray:
        until a node has room for each of its replicas), or raise."""
        if target.config.placement == "ray":
            self._make_room_on_ray(target)
            return
        if self._budget is None:
            return
        residents = self._budget_view(target, replacing=False)
        victims = memory.choose_evictions(residents, target.size_bytes, self._budget)
        budget_mb = self._budget / memory.MIB
        if victims is None:
            used_mb = sum(r.size_bytes for r in residents) / memory.MIB
            raise InsufficientMemory(
                f"{target.name!r} needs {target.size_bytes / memory.MIB:.2f} MB and the serving memory "
                f"budget of {budget_mb:.2f} MB has {used_mb:.2f} MB in use by deployments that are busy "
                "or cannot be unloaded; retry later or raise serving_memory_budget_mb.",
                retry_after=30,
            )
        for victim in victims:
            self._release(
                victim,
                "evicted",
                f"unloaded to make room for {target.name!r} within the "
                f"{budget_mb:.2f} MB serving memory budget; loads again on its next request",
            )

    def _make_room_on_ray(self, target: Target) -> None:
        """Unload this server's least recently used idle deployments on Ray (`min_replicas: 0`,
        no request in flight) until a node has room for each of `target`'s replicas, only when
        that makes room. Room no eviction makes (a node joining, other work ending) is waited for
        `ROOM_WAIT_S`, then the load fails at once rather than waiting on Ray for minutes. Where
        the nodes cannot be read (Ray Client), Ray's scheduler alone decides, as it waits."""
        if not target.ray_address:
            return  # its load says why it cannot start
        from openmaas.serving import ray_pool

        ray_pool.connect(target.ray_address)
        replicas = target.ray_replicas()
        deadline = time.monotonic() + ray_pool.ROOM_WAIT_S
        while True:
            free = ray_pool.free_per_node()
            if free is None:
                return
            victims = memory.choose_ray_evictions(free, self._ray_view(target), replicas)
            if victims is not None:
                break
            if time.monotonic() >= deadline or self._stopping.is_set():
                raise _no_room_on_ray(target, replicas)
            self._stopping.wait(0.5)
        for victim in victims:
            self._release(
                victim,
                "evicted",
                f"unloaded to make room on the Ray cluster for {target.name!r}; loads again on its "
                "next request",
            )

    def _ray_view(self, target: Target) -> list[memory.RayResident]:
        """This server's deployments on Ray with what their replicas hold on each node; only idle
        ones with `min_replicas: 0` may go (not `target`'s own: a rolling update serves from it)."""
        with self._lock:
            residents = [(r, self._last_used.get(r.key, 0.0)) for r in self._resident.values() if r.on_ray]
        view = []
        for resident, last_used in residents:
            served = self._directory.lookup(*resident.key)
            if served is None:
                continue
            busy = (
                resident.min_replicas > 0
                or resident.deployment_id == target.deployment_id
                or self._busy(resident.key)
            )
            view.append(memory.RayResident(resident.deployment_id, _ray_holds(served), last_used, busy))
        return view

    def _budget_view(self, target: Target, *, replacing: bool) -> list[memory.Resident]:
        """What the budget holds beside `target`: every loaded deployment (its own one too, unless
        `replacing` it, and busy: a rolling update serves from it until the switch) and the
        replaced runtimes still draining (busy)."""
        with self._lock:
            residents = [
                memory.Resident(
                    r.deployment_id,
                    r.size_bytes,
                    self._last_used.get(r.key, 0.0),
                    busy=r.deployment_id == target.deployment_id or self._busy(r.key),
                )
                for r in self._resident.values()
                if not (replacing and r.deployment_id == target.deployment_id)
            ]
        draining = self._drains.held()
        if draining:
            residents.append(memory.Resident("draining", draining, 0.0, busy=True))
        return residents

    def _busy(self, key: Key) -> bool:
        """Requests in flight, or a runtime that cannot tell (in-process LLMs and embeddings: never
        unloaded; on Ray their API server counts them)."""
        served = self._directory.lookup(*key)
        if served is None:
            return False
        return any(getattr(runtime, "in_flight", 1) for runtime in served.runtimes())

    def _release(self, deployment_id: str, kind: str, message: str) -> None:
        """Unload a deployment that stays `ready`: its next request loads it again."""
        with self._lock:
            resident = self._resident.pop(deployment_id, None)
            if resident is None:
                return
            served = self._directory.lookup(*resident.key)
            self._cold[resident.key] = (  # before it leaves the directory
                _cold_entry_of(served)
                if served is not None
                else ServedModel(
                    resident.key[1], resident.key[0], resident.key[0], 0, deployment_id=deployment_id
                )
            )
        served = self._directory.unregister(*resident.key)
        if served is not None:
            _close(served.runtimes())  # drains what was already queued
        with self._db.session() as session:
            service.add_event(session, deployment_id, kind, message, self._clock.now())
        logs.event(
            log,
            "deployment_unloaded",
            deployment_id=deployment_id,
            org_id=resident.key[0],
            deployment=resident.key[1],
            reason=kind,
        )

    def _sweep(self) -> None:
        now = self._clock.monotonic()
        with self._lock:
            idle = [
                r
                for r in self._resident.values()
                if r.min_replicas == 0 and now - self._last_used.get(r.key, now) >= r.idle_timeout_s
            ]
        for resident in idle:
            if not self._busy(resident.key):
                message = f"no requests for {resident.idle_timeout_s:g} s; loads again on the next request"
                self._release(resident.deployment_id, "scaled_to_zero", message)

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(self._sweep_interval_s):
            try:
                self.sweep().result()
            except RuntimeError:  # the loader shut down: the server is stopping
                return
            except Exception:
                log.exception("the idle sweep failed")

    def _target(self, session: Session, row: service.Deployment) -> Target:
        config = DeploymentConfig.from_stored(row.config)
        ids = [route.version_id for route in config.routes(row.version_id)]
        versions = {v.id: v for v in session.scalars(select(ModelVersion).where(ModelVersion.id.in_(ids)))}
        events = partial(self._record_later, row.id)
        return build_target(session, row, config, versions, self._store, self._ray_address, events)

    def _record_later(self, deployment_id: str, kind: str, message: str) -> None:
        """Record a deployment event on the loader thread (the caller may be the event loop)."""

        def record() -> None:
            with self._db.session() as session:
                if session.get(service.Deployment, deployment_id) is not None:
                    service.add_event(session, deployment_id, kind, message, self._clock.now())

        with contextlib.suppress(RuntimeError):  # the loader shut down: the server is stopping
            self._loader.submit(record)


def _loaded_event(target: Target, name: str, seconds: float | None, cold: bool = False) -> None:
    logs.event(
        log,
        name,
        deployment_id=target.deployment_id,
        org_id=target.org_id,
        deployment=target.name,
        versions=",".join(route.ref for route in target.routes),
        seconds=None if seconds is None else round(seconds, 3),
        cold_start=cold or None,
    )


def _cold_entry(row: service.Deployment) -> ServedModel:
    """A deployment's directory entry while it is unloaded (no runtime)."""
    created = int(row.created_at.timestamp())
    return ServedModel(
        row.name, row.org_id, row.org_id, created, deployment_id=row.id, version_id=row.version_id
    )


def _cold_entry_of(served: ServedModel) -> ServedModel:
    return dataclasses.replace(served, runtime=None, routes=(), cumulative=())


def _ray_holds(served: ServedModel) -> dict[str, memory.Reserve]:
    """What a deployment's Ray replicas reserve, by the node each loaded on."""
    holds: dict[str, memory.Reserve] = {}
    for runtime in served.runtimes():
        spec = runtime.pool.spec
        each = memory.Reserve(spec.cpus, spec.gpus, spec.memory_bytes)
        for facts in runtime.pool.facts:
            holds[facts.node_id] = holds.get(facts.node_id, memory.Reserve()) + each
    return holds


def _no_room_on_ray(target: Target, replicas: list[memory.Reserve]) -> InsufficientMemory:
    largest = max(replicas, key=lambda r: r.memory_bytes, default=memory.Reserve())
    gpus = f", {largest.gpus:g} GPU(s)" if largest.gpus else ""
    return InsufficientMemory(
        f"{target.name!r} needs {len(replicas)} replica(s) of {largest.cpus:g} CPU(s){gpus} and "
        f"{largest.memory_bytes / memory.MIB:.2f} MB of Ray memory, and the Ray cluster has no node "
        "with that unreserved for each, even after unloading this server's idle deployments; retry "
        "later, stop other deployments or add a node.",
        retry_after=30,
    )


def _versions(target: Target) -> str:
    return ", ".join(route.ref for route in target.routes)


def _close(runtimes: list[Any]) -> None:
    for runtime in runtimes:
        runtime.close()
