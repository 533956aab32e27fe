"""/predict replicas as Ray actors (`placement: ray`): each actor holds the deployment's runtime
(the predictor behind its dynamic batcher, so batching happens inside the actor), loaded from the
shared artifact store; `serving/ray_pool.py` keeps the actors.

The API server holds a `RayPredictorRuntime`: it checks requests against the model's signature
on the event loop, as a local runtime does, and sends the rows to the least busy actor — never
through Ray Serve's HTTP proxy. Predictions go over the replica's direct line
(serving/replica_channel.py: a Ray actor call alone costs more than the model's answer); the
actor's handle gives its address and carries everything else (loading, explanations, restarts).
Predictions and explanations are idempotent: a call in flight on an actor that dies is sent once
more to another replica, so the request is answered and metered once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ray.util import get_node_ip_address

from openmaas import errors
from openmaas.serving.explain.options import ExplainLimits, ExplainOptions
from openmaas.serving.ray_pool import (
    ReplicaEvents,
    ReplicaPool,
    ReplicaSpec,
    node_id,
    sendable,
    unavailable,
)
from openmaas.serving.replica_channel import ChannelAddress, ChannelLost, ChannelServer
from openmaas.serving.runtimes import load_runtime
from openmaas.serving.runtimes.predictor import PredictInputs
from openmaas.serving.signatures import input_check
from openmaas.storage import open_store

# Calls running on one replica before further predictions wait to go together in the next one.
CALLS_PER_REPLICA = 2
MAX_SENT = 256  # predictions in one call at most
# A call's answer may take the longest timeout among its predictions, plus this, before its replica
# counts as lost (a replica past its timeout answers with the timeout's error itself).
SILENCE_S = 30.0


@dataclass(frozen=True)
class ModelFacts:
    """What the API server needs to check requests, told by a loaded replica."""

    task: str
    signature: dict[str, Any]
    labels: list[str]
    item_count: int
    node_id: str
    channel: ChannelAddress  # where the replica takes predictions


class PredictorReplica:
    """The actor: one runtime of the /predict family, built from the shared store."""

    def __init__(self, spec: ReplicaSpec) -> None:
        with open_store(spec.storage_url).reading(spec.artifact) as folder:
            self._runtime: Any = load_runtime(spec.task, folder, spec.config)
        self._channel: ChannelServer | None = None

    async def facts(self) -> ModelFacts:
        """What the API server needs, once loaded; the first call opens the replica's channel
        (on the actor's event loop, where it then serves)."""
        if self._channel is None:
            self._channel = await ChannelServer.start(self.predict, get_node_ip_address())
        runtime = self._runtime
        return ModelFacts(
            runtime.task,
            runtime.signature,
            runtime.labels,
            runtime.item_count,
            node_id(),
            self._channel.address,
        )

    async def predict(self, calls: list[tuple[list[Any], int | None, float]]) -> list[Any]:
        """Several requests sent together, each queued on this replica's batcher: per request its
        predictions, or the error it answers with."""
        runtime = self._runtime
        answers = await asyncio.gather(
            *(runtime.predict(rows, top_k, timeout_s=timeout_s) for rows, top_k, timeout_s in calls),
            return_exceptions=True,
        )
        return [sendable(answer) for answer in answers]

    async def explain(
        self, rows: list[Any], options: ExplainOptions, limits: ExplainLimits, timeout_s: float
    ) -> list[dict[str, Any]]:
        explainer = self._runtime.explainer(limits)
        result: list[dict[str, Any]] = await explainer.explain(rows, options, timeout_s=timeout_s, gone=None)
        return result


@dataclass(slots=True)
class _Waiting:
    """A prediction not yet answered, and where its answer goes."""

    rows: list[Any]
    top_k: int | None
    timeout_s: float
    answer: asyncio.Future[list[Any]]


class RayPredictorRuntime(PredictInputs):
    """A /predict deployment's replicas on Ray, as the API server's directory holds it."""

    # Requests awaiting an answer; the replica manager unloads (scales to zero) only at none.
    in_flight: int = 0

    def __init__(self, spec: ReplicaSpec, replicas: int, events: ReplicaEvents | None = None) -> None:
        """Start `replicas` actors and wait until they have loaded (on the replica loader thread);
        `events(kind, message)` records what happens to them later as deployment events."""
        self.version = spec.config.model_version
        self._spec = spec
        self.pool = ReplicaPool(PredictorReplica, spec, replicas, events)
        self._waiting: list[_Waiting] = []  # predictions not yet sent
        first: ModelFacts = self.pool.facts[0]
        self.task = first.task
        self.signature = first.signature
        self.labels = first.labels
        self.item_count = first.item_count
        self.check_inputs = input_check(self.signature)
        self.nodes = [f.node_id for f in self.pool.facts]

    @property
    def replicas(self) -> int:
        return len(self.pool)

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
        pool = self.pool
        while self._waiting:
            slot = pool.pick()
            if pool.busy[slot] >= CALLS_PER_REPLICA:
                return  # they go together once a call returns
            batch, self._waiting = self._waiting[:MAX_SENT], self._waiting[MAX_SENT:]
            pool.busy[slot] += 1  # taken now, so the next pick sees it
            pool.watch(self._predict_on(slot, batch))

    async def _predict_on(self, slot: int, batch: list[_Waiting]) -> None:
        """One call carrying `batch`; if its replica dies under it, once more on another."""
        pool = self.pool
        calls = [(w.rows, w.top_k, w.timeout_s) for w in batch]
        silence_s = max(w.timeout_s for w in batch) + SILENCE_S
        for attempt in (1, 2):
            try:
                answers = await pool.over_channel(slot, calls, silence_s)
            except ChannelLost as exc:
                failure: BaseException = exc
            except BaseException as exc:
                _answer(batch, [exc] * len(batch))
                return
            else:
                _answer(batch, answers)
                return
            finally:
                pool.busy[slot] -= 1
                self._send()
            if attempt == 2:
                break
            pool.retried(failure)
            slot = pool.pick(avoid=slot)
            pool.busy[slot] += 1
        _answer(batch, [unavailable()] * len(batch))

    def explainer(self, limits: ExplainLimits) -> RemoteExplainer:
        return RemoteExplainer(self, limits)

    def close(self) -> None:
        self.pool.close()


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
            result: list[dict[str, Any]] = await runtime.pool.call(
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
