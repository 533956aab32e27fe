"""The inference use-case with a fake usage gate and fake replicas: what is admitted, run,
recorded or abandoned, the one retry on a version swapped while a request queued, and that a
prediction of a loaded model admitted from memory reaches the batch without a pause."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from openmaas import errors
from openmaas.serving.batcher import ReplicaClosed
from openmaas.serving.directory import ServedModel
from openmaas.serving.explain.options import ExplainLimits
from openmaas.serving.inference import Inference
from openmaas.tenancy.auth import Principal

CALLER = Principal("key_1", "org_1", frozenset({"inference"}), None)


class FakeReceipt:
    def __init__(self) -> None:
        self.waited = False
        self.withdraw = False

    async def wait_async(self, *, withdraw: bool = False) -> None:
        self.waited = True
        self.withdraw = withdraw


@dataclass
class FakeGate:
    """Admits from memory unless `in_memory` is False (then only `admit`, as in a thread)."""

    in_memory: bool = True
    log: list[tuple[str, Any]] = field(default_factory=list)
    receipts: list[FakeReceipt] = field(default_factory=list)

    def admit_nowait(self, org_id: str, key_id: str, request_id: str, **kw: Any) -> object | None:
        if not self.in_memory:
            return None
        return self._admit("admit_nowait", kw)

    def admit(self, org_id: str, key_id: str, request_id: str, **kw: Any) -> object:
        return self._admit("admit", kw)

    def _admit(self, how: str, kw: dict[str, Any]) -> object:
        self.log.append((how, dict(kw["worst_case"])))
        kw["headers"]["x-ratelimit-remaining-requests"] = "9"
        return object()

    def complete(self, admission: object, actual: dict[str, int]) -> FakeReceipt:
        self.log.append(("complete", dict(actual)))
        self.receipts.append(FakeReceipt())
        return self.receipts[-1]

    def abandon(self, admission: object) -> None:
        self.log.append(("abandon", None))

    def failed(self, admission: object) -> None:
        self.log.append(("failed", None))


class FakeRuntime:
    """A /predict runtime: doubles each row; `failures` are raised by the next predictions."""

    task = "tabular-regression"
    version = "m:1"

    def __init__(self, failures: list[BaseException] | None = None) -> None:
        self.failures = failures or []
        self.calls = 0

    def check(self, inputs: Any, top_k: Any) -> tuple[list[Any], int | None]:
        if type(inputs) is not list or not inputs:
            raise errors.ValidationFailed("inputs must be a non-empty array.", param="inputs")
        return inputs, top_k

    async def predict(self, rows: list[Any], top_k: Any, *, timeout_s: float, gone: Any) -> list[Any]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return [{"value": 2 * row} for row in rows]


class FakeReplicas:
    def __init__(self, *runtimes: Any) -> None:
        self.runtimes = list(runtimes)  # the next acquire answers with the first; a swap pops it
        self.waited = 0

    def acquire_loaded(self, org_id: str, name: str) -> ServedModel | None:
        return self._served() if self.runtimes else None

    async def acquire(self, org_id: str, name: str, *, cold_start: bool = True) -> ServedModel:
        if not self.runtimes:
            raise errors.NotFound(f"The model {name!r} does not exist.", param="model")
        self.waited += 1
        return self._served()

    def _served(self) -> ServedModel:
        return ServedModel("api", "org_1", "org_1", 0, version_id="mv_1", runtime=self.runtimes[0])


class FixedClock:
    def now(self) -> datetime:
        return datetime(2025, 1, 2, tzinfo=UTC)

    def monotonic(self) -> float:
        return 0.0


def _inference(replicas: FakeReplicas, gate: FakeGate) -> Inference:
    return Inference(
        replicas,  # type: ignore[arg-type]
        gate,  # type: ignore[arg-type]
        FixedClock(),
        predict_timeout_s=30.0,
        predict_max_rows=1000,
        explain_timeout_s=60.0,
        explain_limits=ExplainLimits(),
    )


def _predict(inference: Inference, body: dict[str, Any]) -> Awaitable[Any]:
    return inference.predict(CALLER, "api", orjson.dumps(body), None, "req_1", None)


def test_a_prediction_is_admitted_run_recorded_and_durable_before_it_answers() -> None:
    gate = FakeGate()
    answer = asyncio.run(_predict(_inference(FakeReplicas(FakeRuntime()), gate), {"inputs": [1, 2]}))
    assert answer.result == [{"value": 2}, {"value": 4}]
    assert answer.served.version_id == "mv_1"
    assert answer.headers == {"x-ratelimit-remaining-requests": "9"}
    assert gate.log == [
        ("admit_nowait", {"requests": 1, "rows": 2}),
        ("complete", {"requests": 1, "rows": 2}),
    ]
    assert gate.receipts[0].waited
    assert gate.receipts[0].withdraw  # not answered yet: a wait that runs out is refused, unbilled


def test_an_admission_that_needs_the_database_is_made_in_a_thread() -> None:
    gate = FakeGate(in_memory=False)
    asyncio.run(_predict(_inference(FakeReplicas(FakeRuntime()), gate), {"inputs": [1]}))
    assert [entry[0] for entry in gate.log] == ["admit", "complete"]


def test_a_version_swapped_while_queued_is_asked_once_more_and_twice_fails() -> None:
    old, new = FakeRuntime([ReplicaClosed("swapped")]), FakeRuntime()
    replicas, gate = FakeReplicas(old, new), FakeGate()
    original = old.predict

    async def swapped(*args: Any, **kw: Any) -> list[Any]:
        replicas.runtimes.pop(0)  # the new version is what the next lookup finds
        return await original(*args, **kw)

    old.predict = swapped  # type: ignore[method-assign]
    answer = asyncio.run(_predict(_inference(replicas, gate), {"inputs": [3]}))
    assert answer.result == [{"value": 6}] and new.calls == 1
    assert [entry[0] for entry in gate.log] == ["admit_nowait", "abandon", "admit_nowait", "complete"]

    twice = FakeRuntime([ReplicaClosed("swapped"), ReplicaClosed("swapped again")])
    gate = FakeGate()
    with pytest.raises(ReplicaClosed):
        asyncio.run(_predict(_inference(FakeReplicas(twice), gate), {"inputs": [3]}))
    assert [entry[0] for entry in gate.log] == ["admit_nowait", "abandon"] * 2


def test_a_failed_run_releases_its_hold_records_nothing_and_counts_a_failure() -> None:
    gate = FakeGate()
    failing = FakeRuntime([errors.ServiceUnavailable("queue full", retry_after=1)])
    with pytest.raises(errors.ServiceUnavailable):
        asyncio.run(_predict(_inference(FakeReplicas(failing), gate), {"inputs": [1]}))
    assert [entry[0] for entry in gate.log] == ["admit_nowait", "abandon", "failed"]


def test_a_refusal_while_running_is_not_counted_as_a_failure() -> None:
    gate = FakeGate()
    failing = FakeRuntime([errors.InvalidRequest("row 0: bad", param="inputs")])
    with pytest.raises(errors.InvalidRequest):
        asyncio.run(_predict(_inference(FakeReplicas(failing), gate), {"inputs": [1]}))
    assert [entry[0] for entry in gate.log] == ["admit_nowait", "abandon"]


def test_bad_input_is_refused_before_anything_is_admitted() -> None:
    gate = FakeGate()
    inference = _inference(FakeReplicas(FakeRuntime()), gate)
    with pytest.raises(errors.ValidationFailed):
        asyncio.run(_predict(inference, {"inputs": []}))
    with pytest.raises(errors.InvalidRequest):  # not JSON: raised at the call, before any await
        inference.predict(CALLER, "api", b"{", None, "req_1", None)
    assert gate.log == []


def test_a_caller_without_the_inference_scope_is_refused_before_its_body_is_read() -> None:
    reader = Principal("key_2", "org_1", frozenset({"models:read"}), None)
    inference = _inference(FakeReplicas(FakeRuntime()), FakeGate())
    with pytest.raises(errors.PermissionDenied):
        inference.predict(reader, "api", b"not json", None, "req_1", None)


def test_an_llm_deployment_is_not_answered_by_predict() -> None:
    llm = FakeRuntime()
    llm.task = "text-generation"
    with pytest.raises(errors.InvalidRequest) as refused:
        asyncio.run(_predict(_inference(FakeReplicas(llm), FakeGate()), {"inputs": [1]}))
    assert refused.value.code == "wrong_model_type"


def test_a_loaded_model_admitted_from_memory_reaches_the_batch_without_a_pause() -> None:
    """The hot path: the first step of the coroutine runs all the way into the batcher."""
    batch: asyncio.Future[list[Any]] | None = None
    reached: list[bool] = []

    class QueuedRuntime(FakeRuntime):
        def predict(self, rows: list[Any], top_k: Any, *, timeout_s: float, gone: Any) -> Any:
            reached.append(True)
            return batch

    async def main() -> None:
        nonlocal batch
        batch = asyncio.get_running_loop().create_future()
        coroutine = _predict(_inference(FakeReplicas(QueuedRuntime()), FakeGate()), {"inputs": [1]})
        step: Callable[[None], Any] = coroutine.send  # type: ignore[attr-defined]
        step(None)  # runs until it waits on the batch's future
        assert reached == [True]
        batch.set_result([{"value": 2}])
        with pytest.raises(StopIteration) as done:
            step(None)
        assert done.value.value.result == [{"value": 2}]

    asyncio.run(main())
