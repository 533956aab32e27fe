"""A deployment version's replicas as Ray actors, whatever runtime they hold (`placement: ray`):
start them reserving their CPUs, GPUs and node memory, pick the least busy, call one and — for a
call that may run twice — once more on another when it dies, and re-create a dead one.

Ray itself restarts an actor lost to a crash or its node's death (`max_restarts`); one killed for
good is replaced here, once however many calls saw it die, and calls avoid a new actor until it
has loaded. The runtime kinds (serving/ray_replicas.py for /predict, ray_llm.py, ray_embeddings.py)
each define their actor class and the API server's side of their calls; this module only keeps
the actors. Only the `placement: ray` path imports it, and only it and those modules import Ray.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayTaskError

from openmaas import errors, logs
from openmaas.serving.batcher import ReplicaClosed
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.serving.memory import MIB, InsufficientMemory, Reserve
from openmaas.serving.replica_channel import ChannelLost, ReplicaChannel

log = logging.getLogger("openmaas.serving")

# Ray restarts an actor lost to a crash or its node's death this many times (then we re-create it).
MAX_RESTARTS = 3
# How long a load waits for its replicas once a node has room for each (their loading, mostly).
LOAD_TIMEOUT_S = 300.0
# How long a load waits for room that no eviction makes (a node joining, other work ending), then
# fails (503 insufficient_memory with Retry-After while the deployment scaled to zero stays ready).
ROOM_WAIT_S = 5.0

# Records a deployment event `(kind, message)`; called on the event loop, so it must not block.
ReplicaEvents = Callable[[str, str], None]


def connect(address: str) -> None:
    """Join the Ray cluster at `address` once per process (a process already in one stays)."""
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)


def free_per_node() -> dict[str, Reserve] | None:
    """What each live node has unreserved now, by node id (Ray's view: it lags a replica started
    or killed a moment ago); None where it cannot be read (a Ray Client connection, `ray://`).
    A developer API: Ray's public per-node view (`ray.util.state`) needs the dashboard, which
    cluster mode may not run."""
    from ray._private.state import available_resources_per_node

    try:
        nodes = available_resources_per_node()
    except Exception:
        log.debug("cannot read Ray's resources per node", exc_info=True)
        return None
    return {
        node: Reserve(float(r.get("CPU", 0.0)), float(r.get("GPU", 0.0)), int(r.get("memory", 0)))
        for node, r in nodes.items()
    }


@dataclass(frozen=True)
class ReplicaSpec:
    """What an actor loads and what it reserves on its node."""

    task: str
    storage_url: str
    artifact: str  # the version's folder in the artifact store
    config: RuntimeConfig  # for one replica (one model copy)
    cpus: float
    gpus: float
    memory_bytes: int  # Ray's `memory` resource: the node's memory the replica holds


def replica_spec(
    task: str,
    storage_url: str,
    artifact: str,
    config: RuntimeConfig,
    cpus: float,
    gpus: float,
    memory_bytes: int,
) -> ReplicaSpec:
    """One actor's spec: one model copy, using the CPUs it reserves for its model's threads and
    (an LLM's engine, unless its device is given) the GPU it reserves."""
    engine = config.engine
    if engine.num_threads is None:
        engine = engine.model_copy(update={"num_threads": max(1, int(cpus))})
    if engine.device is None and gpus > 0:
        engine = engine.model_copy(update={"device": "cuda"})
    return ReplicaSpec(
        task, storage_url, artifact, replace(config, replicas=1, engine=engine), cpus, gpus, memory_bytes
    )


class ReplicaPool:
    """The actors of one version: `replicas` of `actor_class(spec)`, each with a `facts()` method
    that answers once it has loaded. Lives on the API server's event loop (no locks)."""

    def __init__(
        self,
        actor_class: type,
        spec: ReplicaSpec,
        replicas: int,
        events: ReplicaEvents | None = None,
    ) -> None:
        """Start the actors and wait until they have loaded (on the replica loader thread): their
        `facts()` answers, in order, are `facts`."""
        self.version = spec.config.model_version
        self.spec = spec
        self._events = events
        self._closed = False
        options: dict[str, Any] = {
            "num_cpus": spec.cpus,
            "num_gpus": spec.gpus,
            "max_restarts": MAX_RESTARTS,
            "max_task_retries": 0,  # retried here, once, on another replica, where that is safe
            "scheduling_strategy": "SPREAD",
        }
        if spec.memory_bytes > 0:
            options["memory"] = spec.memory_bytes
        self._actor_class: Any = ray.remote(actor_class).options(**options)
        self.actors: list[Any] = [self._actor_class.remote(spec) for _ in range(max(1, replicas))]
        self.busy = [0] * len(self.actors)  # calls in flight per replica
        self._starting: set[int] = set()  # re-created replicas still loading
        # Direct lines to replicas whose facts give a `channel` address (replica_channel.py),
        # opened at their first call; a slot's line is dropped when its replica is lost.
        self.channels: list[ReplicaChannel | None] = [None] * len(self.actors)
        self._connecting: dict[int, asyncio.Future[ReplicaChannel]] = {}
        self._watching: set[asyncio.Future[Any]] = set()
        try:
            self.facts: list[Any] = ray.get([a.facts.remote() for a in self.actors], timeout=LOAD_TIMEOUT_S)
        except BaseException as exc:
            self.close()
            raise _load_error(exc, spec) from None

    def __len__(self) -> int:
        return len(self.actors)

    def pick(self, avoid: int | None = None) -> int:
        """The least busy loaded replica (other than `avoid` when there is one)."""
        slots = [s for s in range(len(self.actors)) if s != avoid and s not in self._starting]
        if not slots:
            slots = [s for s in range(len(self.actors)) if s != avoid] or [0]
        return min(slots, key=self.busy.__getitem__)

    async def call(self, method: str, *args: Any, retry: bool = True) -> Any:
        """`method(*args)` on the least busy replica, our errors raised as they are; if the replica
        dies under it, once more on another (unless not `retry`), then 503 `replica_unavailable`."""
        slot = self.pick()
        for attempt in (1, 2):
            actor = self.actors[slot]
            self.busy[slot] += 1
            ref = getattr(actor, method).remote(*args)
            try:
                return await ref
            except asyncio.CancelledError:  # the client went away: stop the work on the replica
                ray.cancel(ref)
                raise
            except RayTaskError as exc:
                raise exc.cause if isinstance(exc.cause, Exception) else exc from None
            except RayActorError as exc:
                if self._closed:  # replaced while it ran: the caller asks the new replicas
                    raise replaced() from None
                self.replace_if_dead(slot, actor, exc)
                if attempt == 2 or not retry:
                    break
                self.retried(exc)
            finally:
                self.busy[slot] -= 1
            slot = self.pick(avoid=slot)
        raise unavailable()

    async def over_channel(self, slot: int, message: Any, timeout_s: float) -> Any:
        """`message` to replica `slot`'s channel handler, its answer back. `ChannelLost` if the
        line breaks, cannot be opened or stays silent past `timeout_s`: the replica is then
        avoided until Ray says it is alive again (or it is replaced), and the caller may retry."""
        if self._closed:  # replaced: the caller asks the new replicas
            raise replaced()
        actor = self.actors[slot]
        try:
            channel = self.channels[slot]
            if channel is None or channel.closed:
                channel = await self._connect(slot)
            return await asyncio.wait_for(channel.call(message), timeout_s)
        except (ChannelLost, TimeoutError) as exc:
            if self._closed:
                raise replaced() from None
            lost = exc if isinstance(exc, ChannelLost) else ChannelLost(f"no answer in {timeout_s:g} s")
            self.lost(slot, actor, lost)
            raise lost from None

    async def _connect(self, slot: int) -> ReplicaChannel:
        """Replica `slot`'s line, opened once however many calls wait for it."""
        opening = self._connecting.get(slot)
        if opening is None:
            opening = asyncio.ensure_future(ReplicaChannel.open(self.facts[slot].channel))
            self._connecting[slot] = opening
            opening.add_done_callback(lambda _: self._connecting.pop(slot, None))
        channel = await asyncio.shield(opening)
        held = self.channels[slot]
        if held is None or held.closed:
            self.channels[slot] = channel
        return channel

    def lost(self, slot: int, actor: Any, reason: ChannelLost) -> None:
        """A call found replica `slot`'s line broken (`reason`): avoid it and ask Ray what became of
        it (once however many calls saw it)."""
        if self._closed or self.actors[slot] is not actor or slot in self._starting:
            return
        self._set_aside(slot, "replica_channel_lost", reason, self._until_answering(slot, actor))

    async def _until_answering(self, slot: int, actor: Any) -> None:
        """Serve replica `slot` again once its actor answers (Ray may be restarting it, with a new
        channel address in its facts); re-create it if it died for good."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOAD_TIMEOUT_S
        while not self._closed and self.actors[slot] is actor:
            try:
                facts = await actor.facts.remote()
            except ActorDiedError as exc:
                self.replace_if_dead(slot, actor, exc)
                return
            except RayActorError:  # not reachable now (its node may be going): ask again shortly
                if loop.time() > deadline:
                    return  # it stays avoided while others serve
                await asyncio.sleep(0.5)
                continue
            except Exception:
                return
            if self.actors[slot] is actor:
                self.facts[slot] = facts
                self._starting.discard(slot)
            return

    def _drop_channel(self, slot: int) -> None:
        channel, self.channels[slot] = self.channels[slot], None
        if channel is not None:
            channel.close()

    def retried(self, failure: BaseException) -> None:
        logs.event(
            log,
            "replica_call_retried",
            level=logging.WARNING,
            version=self.version,
            reason=str(failure)[:200],
        )

    def replace_if_dead(self, slot: int, actor: Any, exc: RayActorError) -> None:
        """Re-create a replica gone for good (killed, or past its restarts), once however many
        calls saw it die; one Ray is restarting is left to Ray."""
        if self._closed or not isinstance(exc, ActorDiedError) or self.actors[slot] is not actor:
            return
        fresh = self._actor_class.remote(self.spec)
        self.actors[slot] = fresh
        self._event("replica_restarted", f"replica {slot + 1} of {self.version} died; starting a new one")
        self._set_aside(slot, "replica_recreated", exc, self._until_loaded(slot, fresh))

    def _set_aside(
        self, slot: int, event: str, reason: BaseException, back: Coroutine[Any, Any, Any]
    ) -> None:
        """Stop sending to replica `slot` (its line closed, the pool avoids it) until `back`, watched
        on the loop, serves it again; logged as `event` with `reason`."""
        logs.event(
            log, event, level=logging.WARNING, version=self.version, replica=slot, reason=str(reason)[:200]
        )
        self._drop_channel(slot)
        self._starting.add(slot)
        self.watch(back)

    def watch(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` on the event loop, held until done (the loop keeps only weak references)."""
        task = asyncio.ensure_future(work)
        self._watching.add(task)
        task.add_done_callback(self._watching.discard)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        for slot in range(len(self.channels)):
            self._drop_channel(slot)
        if not ray.is_initialized():  # the process left the cluster: its actors went with it
            return
        for actor in self.actors:
            ray.kill(actor)

    async def _until_loaded(self, slot: int, actor: Any) -> None:
        try:
            facts = await actor.facts.remote()
        except Exception as exc:
            if self._closed:
                return
            logs.event(
                log,
                "replica_start_failed",
                level=logging.ERROR,
                version=self.version,
                replica=slot,
                reason=str(exc)[:200],
            )
            self._event("replica_failed", f"replica {slot + 1} of {self.version} did not start again: {exc}")
            return  # it stays avoided while others are loaded
        if self.actors[slot] is actor:
            self.facts[slot] = facts
            self._starting.discard(slot)
            self._event("replica_ready", f"replica {slot + 1} of {self.version} is serving again")

    def _event(self, kind: str, message: str) -> None:
        if self._events is not None:
            self._events(kind, message[:1000])


def node_id() -> str:
    """The Ray node the calling actor runs on (its `facts` report it)."""
    return str(ray.get_runtime_context().get_node_id())


def sendable(answer: Any) -> Any:
    """An answer as it crosses back from an actor: our errors as they are (4xx/5xx with their
    codes), anything else as a plain error saying what it was."""
    if not isinstance(answer, BaseException) or isinstance(answer, errors.OpenMaaSError):
        return answer
    return RuntimeError(f"{type(answer).__name__}: {answer}")


def replaced() -> ReplicaClosed:
    """For a call on replicas being replaced: `Inference` asks the new ones."""
    return ReplicaClosed("this model version is being replaced; retry", retry_after=1)


def unavailable() -> errors.ServiceUnavailable:
    return errors.ServiceUnavailable(
        "The deployment's replicas failed twice under this request; retry shortly.",
        retry_after=1,
        code="replica_unavailable",
    )


def _load_error(exc: BaseException, spec: ReplicaSpec) -> BaseException:
    """Why the replicas did not load, as the deployment's `failed` reason says it. Not started in
    time is most likely no room on any node: as a load that does not fit the local memory budget,
    a deployment that scaled to zero stays `ready` and its next request tries again."""
    if isinstance(exc, GetTimeoutError):
        gpus = f", {spec.gpus:g} GPU(s)" if spec.gpus else ""
        return InsufficientMemory(
            f"the Ray cluster did not start the replicas within {LOAD_TIMEOUT_S:g} s: no node may have "
            f"{spec.cpus:g} CPU(s){gpus} and {spec.memory_bytes / MIB:.2f} MB of Ray memory unreserved "
            "for each; retry later, stop other deployments or add a node.",
            retry_after=30,
        )
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, Exception):
        return exc.cause
    if isinstance(exc, RayActorError) and isinstance(getattr(exc, "error_msg", None), str):
        return RuntimeError(f"a replica actor died while loading: {exc.error_msg[:500]}")
    return exc
