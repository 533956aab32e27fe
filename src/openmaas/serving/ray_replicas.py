"""Replicas as Ray actors (`placement: ray`): each replica is an actor anywhere on the cluster
holding the deployment's runtime (the predictor behind its dynamic batcher, so batching happens
inside the actor), loaded from the shared artifact store (`open_store(storage_url)`).

The API server holds a `RayPredictorRuntime`: it checks requests against the model's signature
on the event loop, as a local runtime does, and sends the rows to the least busy actor through
its handle (never through Ray Serve's HTTP proxy). Predictions and explanations are idempotent: a
call in flight on an actor that dies is sent once more to another replica, so the request is
answered and metered once. A dead actor is re-created (Ray itself restarts one lost to a crash or
a node's death, `max_restarts`; one killed for good is replaced here), and calls avoid a new
actor until it has loaded.

Only the `placement: ray` path imports this module, and only it imports Ray.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayTaskError

from openmaas import errors, logs
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.serving.explain.options import ExplainLimits, ExplainOptions
from openmaas.serving.runtimes import load_runtime
from openmaas.serving.runtimes.predictor import PredictInputs
from openmaas.serving.signatures import input_check
from openmaas.storage import open_store

log = logging.getLogger("openmaas.serving")

# Ray restarts an actor lost to a crash or its node's death this many times (then we re-create it).
MAX_RESTARTS = 3
# How long a load waits for its replicas (scheduling included: a cluster without room waits).
LOAD_TIMEOUT_S = 300.0
# Calls running on one replica before further predictions wait to go together in the next one.
CALLS_PER_REPLICA = 2
MAX_SENT = 256  # predictions in one call at most


def connect(address: str) -> None:
    """Join the Ray cluster at `address` once per process (a process already in one stays)."""
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)


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


@dataclass(frozen=True)
class ModelFacts:
    """What the API server needs to check requests, told by a loaded replica."""

    task: str
    signature: dict[str, Any]
    labels: list[str]
    item_count: int
    node_id: str


class PredictorReplica:
    """The actor: one runtime of the /predict family, built from the shared store."""

    def __init__(self, spec: ReplicaSpec) -> None:
        with open_store(spec.storage_url).reading(spec.artifact) as folder:
            self._runtime: Any = load_runtime(spec.task, folder, spec.config)

    def facts(self) -> ModelFacts:
        runtime = self._runtime
        node_id = ray.get_runtime_context().get_node_id()
        return ModelFacts(runtime.task, runtime.signature, runtime.labels, runtime.item_count, node_id)

    async def predict(self, calls: list[tuple[list[Any], int | None, float]]) -> list[Any]:
        """Several requests sent together, each queued on this replica's batcher: per request its
        predictions, or the error it answers with."""
        runtime = self._runtime
        answers = await asyncio.gather(
            *(runtime.predict(rows, top_k, timeout_s=timeout_s) for rows, top_k, timeout_s in calls),
            return_exceptions=True,
        )
        return [_sendable(answer) for answer in answers]

    async def explain(
        self, rows: list[Any], options: ExplainOptions, limits: ExplainLimits, timeout_s: float
    ) -> list[dict[str, Any]]:
        explainer = self._runtime.explainer(limits)
        result: list[dict[str, Any]] = await explainer.explain(rows, options, timeout_s=timeout_s, gone=None)
        return result


def _sendable(answer: Any) -> Any:
    """A request's answer as it crosses back: our errors as they are (4xx/5xx with their codes),
    anything else as a plain error saying what it was."""
    if not isinstance(answer, BaseException) or isinstance(answer, errors.OpenMaaSError):
        return answer
    return RuntimeError(f"{type(answer).__name__}: {answer}")


# Records a deployment event `(kind, message)`; called on the event loop, so it must not block.
ReplicaEvents = Callable[[str, str], None]


@dataclass(slots=True)
class _Waiting:
    """A prediction not yet answered, and where its answer goes."""

    rows: list[Any]
    top_k: int | None
    timeout_s: float
    answer: asyncio.Future[list[Any]]


def replica_spec(
    task: str,
    storage_url: str,
    artifact: str,
    config: RuntimeConfig,
    cpus: float,
    gpus: float,
    memory_bytes: int,
) -> ReplicaSpec:
    """One actor's spec: one model copy, using the CPUs it reserves for its model's threads."""
    engine = config.engine
    if engine.num_threads is None:
        engine = engine.model_copy(update={"num_threads": max(1, int(cpus))})
    return ReplicaSpec(
        task, storage_url, artifact, replace(config, replicas=1, engine=engine), cpus, gpus, memory_bytes
    )


class RayPredictorRuntime(PredictInputs):
    """A /predict deployment's replicas on Ray, as the API server's directory holds it."""

    # Requests awaiting an answer; the replica manager unloads (scales to zero) only at none.
    in_flight: int = 0

    def __init__(self, spec: ReplicaSpec, replicas: int, events: ReplicaEvents | None = None) -> None:
        """Start `replicas` actors and wait until they have loaded (on the replica loader thread);
        `events(kind, message)` records what happens to them later as deployment events."""
        self.version = spec.config.model_version
        self._spec = spec
        self._events = events
        self._closed = False
        options: dict[str, Any] = {
            "num_cpus": spec.cpus,
            "num_gpus": spec.gpus,
            "max_restarts": MAX_RESTARTS,
            "max_task_retries": 0,  # retried here, once, on another replica
            "scheduling_strategy": "SPREAD",
        }
        if spec.memory_bytes > 0:
            options["memory"] = spec.memory_bytes
        self._actor_class: Any = ray.remote(PredictorReplica).options(**options)
        self._actors: list[Any] = [self._actor_class.remote(spec) for _ in range(max(1, replicas))]
        self._busy = [0] * len(self._actors)  # calls in flight per replica
        self._starting: set[int] = set()  # re-created replicas still loading
        self._watching: set[asyncio.Future[None]] = set()
        self._waiting: list[_Waiting] = []  # predictions not yet sent
        try:
            facts: list[ModelFacts] = ray.get(
                [a.facts.remote() for a in self._actors], timeout=LOAD_TIMEOUT_S
            )
        except BaseException as exc:
            self.close()
            raise _load_error(exc, spec) from None
        first = facts[0]
        self.task = first.task
        self.signature = first.signature
        self.labels = first.labels
        self.item_count = first.item_count
        self.check_inputs = input_check(self.signature)
        self.nodes = [f.node_id for f in facts]

    @property
    def replicas(self) -> int:
        return len(self._actors)

    @property
    def queued(self) -> int:
        """Predictions waiting for a replica (the console's queue-depth chart reads it)."""
        return len(self._waiting)

    async def predict(
        self, rows: list[Any], top_k: int | None, *, timeout_s: float, gone: Any = None
    ) -> list[Any]:
        """Queue the rows for the next call to a replica: sent at once while a replica has fewer
        than `CALLS_PER_REPLICA` calls running, else together with the others that wait (one
        Ray call for many requests: its cost, not the model, bounds a busy deployment)."""
        if len(self._waiting) >= self._spec.config.max_queue:
            raise errors.ServiceUnavailable(
                "This deployment's queue is full; retry shortly.", retry_after=1, code="queue_full"
            )
        self.in_flight += 1  # on the event loop only: no lock
        try:
            answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._waiting.append(_Waiting(rows, top_k, timeout_s, answer))
            self._send()
            return await answer
        finally:
            self.in_flight -= 1

    def _send(self) -> None:
        while self._waiting:
            slot = self._pick(avoid=None)
            if self._busy[slot] >= CALLS_PER_REPLICA:
                return  # they go together once a call returns
            batch, self._waiting = self._waiting[:MAX_SENT], self._waiting[MAX_SENT:]
            self._busy[slot] += 1  # taken now, so the next pick sees it
            task = asyncio.ensure_future(self._predict_on(slot, batch))
            self._watching.add(task)
            task.add_done_callback(self._watching.discard)

    async def _predict_on(self, slot: int, batch: list[_Waiting]) -> None:
        """One call carrying `batch`; if its replica dies under it, once more on another."""
        calls = [(w.rows, w.top_k, w.timeout_s) for w in batch]
        for attempt in (1, 2):
            actor = self._actors[slot]
            try:
                answers = await actor.predict.remote(calls)
            except RayActorError as exc:
                self._replace_if_dead(slot, actor, exc)
                failure: BaseException = exc
            except BaseException as exc:
                failure = exc.cause if isinstance(exc, RayTaskError) else exc
                _answer(batch, [failure] * len(batch))
                return
            else:
                _answer(batch, answers)
                return
            finally:
                self._busy[slot] -= 1
                self._send()
            if attempt == 2:
                break
            self._retried(failure)
            slot = self._pick(avoid=slot)
            self._busy[slot] += 1
        _answer(batch, [_unavailable()] * len(batch))

    def _retried(self, failure: BaseException) -> None:
        logs.event(
            log,
            "replica_call_retried",
            level=logging.WARNING,
            version=self.version,
            reason=str(failure)[:200],
        )

    def explainer(self, limits: ExplainLimits) -> RemoteExplainer:
        return RemoteExplainer(self, limits)

    def close(self) -> None:
        self._closed = True
        if not ray.is_initialized():  # the process left the cluster: its actors went with it
            return
        for actor in self._actors:
            ray.kill(actor)

    async def _call(self, method: str, *args: Any) -> Any:
        """One request on the least busy replica; if it dies under it, once more on another."""
        slot = self._pick(avoid=None)
        for attempt in (1, 2):
            actor = self._actors[slot]
            self._busy[slot] += 1
            try:
                return await getattr(actor, method).remote(*args)
            except RayTaskError as exc:
                raise exc.cause if isinstance(exc.cause, Exception) else exc from None
            except RayActorError as exc:
                self._replace_if_dead(slot, actor, exc)
                if attempt == 2:
                    break
                self._retried(exc)
            finally:
                self._busy[slot] -= 1
            slot = self._pick(avoid=slot)
        raise _unavailable()

    def _pick(self, avoid: int | None) -> int:
        """The least busy loaded replica (other than `avoid` when there is one)."""
        slots = [s for s in range(len(self._actors)) if s != avoid and s not in self._starting]
        if not slots:
            slots = [s for s in range(len(self._actors)) if s != avoid] or [0]
        return min(slots, key=self._busy.__getitem__)

    def _replace_if_dead(self, slot: int, actor: Any, exc: RayActorError) -> None:
        """Re-create a replica gone for good (killed, or past its restarts), once however many
        calls saw it die; one Ray is restarting is left to Ray."""
        if self._closed or not isinstance(exc, ActorDiedError) or self._actors[slot] is not actor:
            return
        fresh = self._actor_class.remote(self._spec)
        self._actors[slot] = fresh
        self._starting.add(slot)
        logs.event(
            log,
            "replica_recreated",
            level=logging.WARNING,
            version=self.version,
            replica=slot,
            reason=str(exc)[:200],
        )
        self._event("replica_restarted", f"replica {slot + 1} of {self.version} died; starting a new one")
        task = asyncio.ensure_future(self._until_loaded(slot, fresh))
        self._watching.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._watching.discard)

    async def _until_loaded(self, slot: int, actor: Any) -> None:
        try:
            await actor.facts.remote()
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
        if self._actors[slot] is actor:
            self._starting.discard(slot)
            self._event("replica_ready", f"replica {slot + 1} of {self.version} is serving again")

    def _event(self, kind: str, message: str) -> None:
        if self._events is not None:
            self._events(kind, message[:1000])


class RemoteExplainer:
    """A Ray deployment's explainer: rows counted here, attributed by a replica's own explainer."""

    def __init__(self, runtime: RayPredictorRuntime, limits: ExplainLimits) -> None:
        self._runtime = runtime
        self.limits = limits

    def check_rows(self, rows: list[Any]) -> list[Any]:
        return self.limits.check_rows(rows)

    async def explain(
        self, rows: list[Any], options: ExplainOptions, *, timeout_s: float, gone: Any = None
    ) -> list[dict[str, Any]]:
        runtime = self._runtime
        runtime.in_flight += 1
        try:
            result: list[dict[str, Any]] = await runtime._call(
                "explain", rows, options, self.limits, timeout_s
            )
            return result
        finally:
            runtime.in_flight -= 1


def _answer(batch: list[_Waiting], answers: list[Any]) -> None:
    for waiting, answer in zip(batch, answers, strict=True):
        if waiting.answer.done():  # its request was cancelled (the client went away)
            continue
        if isinstance(answer, BaseException):
            waiting.answer.set_exception(answer)
        else:
            waiting.answer.set_result(answer)


def _unavailable() -> errors.ServiceUnavailable:
    return errors.ServiceUnavailable(
        "The deployment's replicas failed twice under this request; retry shortly.",
        retry_after=1,
        code="replica_unavailable",
    )


def _load_error(exc: BaseException, spec: ReplicaSpec) -> BaseException:
    """Why the replicas did not load, as the deployment's `failed` reason says it."""
    if isinstance(exc, GetTimeoutError):
        gpus = f" and {spec.gpus:g} GPU(s)" if spec.gpus else ""
        return TimeoutError(
            f"the Ray cluster did not start the replicas within {LOAD_TIMEOUT_S:g} s: no node may have "
            f"{spec.cpus:g} CPU(s){gpus} and {spec.memory_bytes} bytes of memory free for each"
        )
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, Exception):
        return exc.cause
    if isinstance(exc, RayActorError) and isinstance(getattr(exc, "error_msg", None), str):
        return RuntimeError(f"a replica actor died while loading: {exc.error_msg[:500]}")
    return exc
