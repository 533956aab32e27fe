"""`RayAttempt.poll` against Ray's answers, as the real cluster gives them (the messages are Ray
2.60's, captured when a node running an attempt's actor was removed): `ray.wait` and `ray.get` are
replaced; no cluster starts."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("ray", reason="Ray is not installed: pip install 'openmaas[cluster]'")

from ray.exceptions import ActorUnavailableError, RayActorError

from openmaas.jobs import ray_executor
from openmaas.jobs.executor import Resources

UNAVAILABLE = (
    "The actor is temporarily unavailable: RpcError: RPC error: Socket closed rpc_code: 14. "
    "The task may or may not have been executed on the actor."
)
NODE_DIED = (
    "The actor died unexpectedly before finishing this task.\n\tclass_name: AttemptActor\n"
    "\tactor_id: fe44361a65de7dd83bbd9cb501000000\n\tpid: 6272\n\tnamespace: openmaas\n"
    "\tip: 192.0.2.2\nThe actor died because its node has died. Node Id: "
    "49ae0ccb8092770c47382502f432b94ca940aa116dc66f82e2949595\n"
    "\tthe actor's node was terminated unexpectedly: health check failed due to missing too many "
    "heartbeats"
)


class FakeMethod:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def remote(self) -> str:
        self.calls += 1
        return f"{self.name}-{self.calls}"


class FakeActor:
    def __init__(self) -> None:
        self.run = FakeMethod("run")
        self.resources = FakeMethod("resources")


def attempt_answering(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Any]) -> tuple[Any, FakeActor]:
    """A RayAttempt whose calls (run-1 its first run, run-2 the next, resources-1...) end with
    `answers`: a value, or an exception Ray raises for them; a call with no answer still runs."""

    def wait(refs: list[str], timeout: float) -> tuple[list[str], list[str]]:
        return ([refs[0]], []) if refs[0] in answers else ([], refs)

    def get(ref: str) -> Any:
        answer = answers[ref]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(ray_executor.ray, "wait", wait)
    monkeypatch.setattr(ray_executor.ray, "get", get)
    monkeypatch.setattr(ray_executor, "release_orphaned_groups", list)
    actor = FakeActor()
    first: Any = actor.run.remote()
    return ray_executor.RayAttempt(actor, first, Resources(cpus=1.0, gpus=0.0)), actor


def test_an_unreachable_actor_is_asked_again_and_its_exit_status_taken() -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        answers: dict[str, Any] = {"run-1": ActorUnavailableError(UNAVAILABLE, None)}
        attempt, actor = attempt_answering(monkeypatch, answers)
        assert attempt.reachable()
        assert attempt.poll() is None  # not known dead: still running
        assert actor.run.calls == 2  # `run` asked again (idempotent)
        assert not attempt.reachable()  # out of reach: not billed further
        assert attempt.poll() is None  # run-2 runs: a probe asks whether the actor answers
        assert actor.resources.calls == 1
        answers["resources-1"] = ActorUnavailableError(UNAVAILABLE, None)
        assert attempt.poll() is None
        assert not attempt.reachable()
        assert attempt.poll() is None  # asked again
        assert actor.resources.calls == 2
        answers["resources-2"] = Resources(cpus=1.0, gpus=0.0)
        assert attempt.poll() is None
        assert attempt.reachable()  # it answered: it runs
        assert actor.resources.calls == 2
        answers["run-2"] = 0
        assert attempt.poll() == 0
        assert attempt.exit_reason() is None


def test_an_unreachable_actor_whose_node_is_then_declared_dead_says_the_node_was_lost() -> None:
    """Measured on a real cluster: the first answer after a node's removal is "unavailable"; asked
    again, Ray answers that the actor died with its node once health checks declared it dead."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        answers: dict[str, Any] = {"run-1": ActorUnavailableError(UNAVAILABLE, None)}
        attempt, actor = attempt_answering(monkeypatch, answers)
        assert attempt.poll() is None
        answers["run-2"] = RayActorError(error_msg=NODE_DIED)
        assert attempt.poll() == 1
        assert actor.run.calls == 2
        assert attempt.exit_reason() == (
            "The Ray node running the attempt (ip 192.0.2.2, node 49ae0ccb8092) was lost, and its "
            "actor with it; a retry resumes from the job's last checkpoint, if it made one."
        )


def test_an_actor_that_died_on_a_live_node_says_why_in_rays_last_line() -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        died = (
            "The actor died unexpectedly before finishing this task.\n\tpid: 7\n"
            "The actor is dead because its worker process has died."
        )
        attempt, _ = attempt_answering(monkeypatch, {"run-1": RayActorError(error_msg=died)})
        assert attempt.poll() == 1
        assert attempt.exit_reason() == (
            "The attempt's Ray actor died (The actor is dead because its worker process has died.); "
            "a retry resumes from the job's last checkpoint, if it made one."
        )
