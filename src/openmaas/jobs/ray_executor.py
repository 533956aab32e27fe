"""The Ray executor (`OPENMAAS_EXECUTOR=ray`): each attempt of a job runs in one Ray actor on the
cluster, which runs the job entry (`openmaas.job_process.run_job_on_ray`) in a thread.

Why an actor, not a Ray task or a Ray Job: a Ray Job needs the dashboard's Jobs API, which cluster
mode keeps closed, and starts a fresh Python per attempt; a task cannot be asked to stop gracefully
(`ray.cancel` interrupts it anywhere). An actor gives all three operations the worker needs:
`poll` is a zero-timeout `ray.wait` on its `run` call, `stop` sets the stop flag the job checks
between batches (as SIGTERM does for a local process; the job then stops at its last checkpoint),
and `kill` is `ray.kill`. The actor is owned by the worker's Ray driver: if the worker dies, Ray
ends the actor (and the training workers it started) and another worker takes the job over from
its checkpoint, as with local processes.

Resubmission is idempotent: the actor is named by job id and attempt (`get_if_exists`), and its
`run` runs the attempt once however often it is called.

Placement groups outlive the actor that created them while its Ray job lives: Ray removes a
(non-detached) group only once both its creating actor and its job (here: the worker's Ray
driver, which lives on) are dead. Ray Train's controller creates its workers' group; when the node
of an attempt's actor dies, the controller dies with it and its group is orphaned, rescheduled on
the remaining nodes, holding CPUs that the retried attempt then waits for forever.
`release_orphaned_groups` removes such groups: when the worker finds an attempt's actor dead,
before it starts an attempt, and before an attempt starts its training workers.

Only this module imports Ray; the local path never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError

from openmaas.jobs.executor import Resources, RunSpec

log = logging.getLogger("openmaas.worker")

NAMESPACE = "openmaas"


@dataclass(frozen=True)
class AttemptControl:
    """What the job entry gets from its actor: the stop flag, and where to say what it holds."""

    stop: threading.Event
    holds: Callable[[Resources], None]


# Runs one attempt inside the actor; returns the exit status (as a job process would).
RayJobEntry = Callable[[RunSpec, AttemptControl], int]


def attempt_name(job_id: str, attempt: int) -> str:
    """The Ray actor name of one attempt: the same job and attempt always name the same actor."""
    return f"openmaas-{job_id}-attempt-{attempt}"


class AttemptActor:
    """One attempt on the cluster (a threaded actor: `stop` and `resources` answer while `run` runs)."""

    def __init__(self, entry: RayJobEntry, spec_json: str, resources: Resources) -> None:
        self._entry = entry
        self._spec_json = spec_json
        self._own = resources  # what the actor itself reserved
        self._resources = resources
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started = False
        self._done = threading.Event()
        self._code = 1

    def run(self) -> int:
        with self._lock:
            first, self._started = not self._started, True
        if first:
            try:
                self._code = self._entry(RunSpec.model_validate_json(self._spec_json), self._control())
            except BaseException:
                log.exception("job attempt failed in its Ray actor")
                self._code = 1
            finally:
                self._done.set()
        self._done.wait()
        return self._code

    def stop(self) -> None:
        self._stop.set()

    def resources(self) -> Resources:
        return self._resources

    def _control(self) -> AttemptControl:
        def holds(workers: Resources) -> None:
            # The actor's own reservation and its training workers' (all of them together).
            self._resources = Resources(
                cpus=self._own.cpus + workers.cpus, gpus=self._own.gpus + workers.gpus
            )

        return AttemptControl(self._stop, holds)


_RemoteAttempt: Any = ray.remote(AttemptActor)


class RayAttempt:
    """The worker's view of an attempt's actor (the `Execution` protocol)."""

    def __init__(self, actor: Any, result: ray.ObjectRef, resources: Resources) -> None:
        self._actor = actor
        self._result = result
        self._resources = resources
        self._killed = False
        self._code: int | None = None
        self._lost: str | None = None  # why its actor died under it, for the job's events
        self._reachable = True
        self._probe: ray.ObjectRef | None = None  # a call that asks whether it answers again

    def poll(self) -> int | None:
        if self._code is not None:
            return self._code
        ready, _ = ray.wait([self._result], timeout=0)
        if not ready:
            if not self._reachable:
                self._probe_reach()
            return None
        try:
            self._code = int(ray.get(self._result))
        except ActorUnavailableError:
            # Unreachable, not known dead: its node's raylet is gone but not yet declared dead
            # (measured: 2-3 s here), or the network failed for a moment. `run` is idempotent, so
            # ask again: Ray answers with the attempt's exit status once it is reachable, or with
            # why it died (its node's death, named) once it knows. Until one of its calls answers
            # it is out of reach (`reachable`): not billed further.
            self._reachable = False
            self._result = self._actor.run.remote()
            return None
        except RayActorError as exc:
            # Its node died, or it was killed: the attempt failed; the worker retries it. What its
            # training workers reserved goes back to the cluster first.
            self._code = -9 if self._killed else 1
            self._lost = None if self._killed else actor_lost(exc)
            release_orphaned_groups()
        except RayError:
            self._code = 1
        return self._code

    def reachable(self) -> bool:
        """False from Ray's "unavailable" until a call to the actor answers (the `ReportsReach`
        protocol)."""
        return self._reachable

    def _probe_reach(self) -> None:
        if self._probe is None:
            self._probe = self._actor.resources.remote()
            return
        ready, _ = ray.wait([self._probe], timeout=0)
        if not ready:
            return
        with contextlib.suppress(RayError):
            ray.get(self._probe)
            self._reachable = True
        self._probe = None

    def stop(self) -> None:
        if self._code is None:
            self._actor.stop.remote()

    def kill(self) -> None:
        if self._code is None:
            self._killed = True
            ray.kill(self._actor, no_restart=True)

    def exit_reason(self) -> str | None:
        """Why it ended, when its actor died under it (the `ExplainsExit` protocol)."""
        return self._lost

    def resources(self) -> Resources:
        """What the attempt said it holds (its actor and its training workers), or what its actor
        reserved (the `ReportsResources` protocol: the worker asks at each metering interval)."""
        if self._code is None:
            # Ending or gone: what it held last.
            with contextlib.suppress(GetTimeoutError, RayError):
                self._resources = ray.get(self._actor.resources.remote(), timeout=2.0)
        return self._resources


class RayExecutor:
    """Runs each attempt in a Ray actor (`AttemptActor`) reserving `job_cpus` CPUs."""

    def __init__(self, entry: RayJobEntry, address: str | None, job_cpus: float = 1.0) -> None:
        self._entry = entry
        self._address = address
        self._job_cpus = job_cpus

    def warm(self) -> None:
        """Connect to the cluster (unless this process already is, as in tests)."""
        if not ray.is_initialized():
            ray.init(address=self._address, namespace=NAMESPACE, configure_logging=False)
        log.info("ray executor connected: %s", ray.cluster_resources())

    def start(self, spec: RunSpec) -> RayAttempt:
        self.warm()
        release_orphaned_groups()
        claim = spec.claim
        resources = Resources(cpus=self._job_cpus, gpus=0.0)
        actor = _RemoteAttempt.options(
            name=attempt_name(claim.job_id, claim.attempt),
            namespace=NAMESPACE,
            get_if_exists=True,
            num_cpus=self._job_cpus,
            max_concurrency=4,
            max_restarts=0,
            scheduling_strategy=self._near_worker(),
        ).remote(self._entry, spec.model_dump_json(), resources)
        return RayAttempt(actor, actor.run.remote(), resources)

    def _near_worker(self) -> Any:
        """The worker's own Ray node (any node when the worker is not on one).
        Ray Train's controller goes where the attempt's actor is, so an attempt placed there loses
        neither to the death of a node that holds only training workers: Ray Train restarts those.
        Soft when the actor reserves CPUs (any node while the worker's is full); Ray ignores a soft
        affinity for an actor that reserves nothing (it lands on a random node: measured, half of
        them), so then hard, which such an actor always fits."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        try:
            node_id = ray.get_runtime_context().get_node_id()
        except Exception:  # a Ray Client connection has no node of its own
            return "DEFAULT"
        return NodeAffinitySchedulingStrategy(node_id=node_id, soft=self._job_cpus > 0)


def release_orphaned_groups() -> list[str]:
    """Remove this Ray job's placement groups whose creating actor is dead (see the module's
    docstring); returns their ids. Nothing can use such a group any more: the actors placed in it
    were owned by its creator and died with it. Groups created by the driver itself (no creating
    actor), detached ones and other jobs' are left alone. Best effort: a Ray Client connection
    cannot read the group table (the attempt's actor, on the cluster, does it there).

    The creator's death is read from the actor table: the group table's `creator_actor_dead` is
    not always set. A group that Ray Train's controller created just as it was killed (the worker
    kills an attempt's actor once rank 0 has ended the job, and the controller dies with it, maybe
    while it restarts a worker group) stays CREATED, its creator dead but not marked so, holding
    its CPUs: measured here, the next job's workers could not be placed."""
    from ray._private.state import state as cluster_state
    from ray._raylet import PlacementGroupID
    from ray.core.generated.gcs_pb2 import ActorTableData, PlacementGroupTableData  # type: ignore[attr-defined]
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    try:
        job = ray.get_runtime_context().get_job_id()
        accessor = cluster_state._connect_and_get_accessor()
        table = accessor.get_placement_group_table()
    except Exception:
        log.debug("cannot read Ray's placement group table", exc_info=True)
        return []

    def creator_dead(group: Any) -> bool:
        if group.creator_actor_dead:
            return True
        try:
            found = accessor.get_actor_info(ray.ActorID(group.creator_actor_id))
        except Exception:
            log.debug("cannot read Ray's actor table", exc_info=True)
            return False
        return found is not None and ActorTableData.FromString(found).state == ActorTableData.DEAD

    released = []
    for raw in table:
        group = PlacementGroupTableData.FromString(raw)
        candidate = (
            not ray.ActorID(group.creator_actor_id).is_nil()
            and group.creator_job_id.hex() == job
            and not group.is_detached
            and group.state != PlacementGroupTableData.REMOVED
        )
        if not candidate or not creator_dead(group):
            continue
        group_id = group.placement_group_id.hex()
        with contextlib.suppress(RayError):
            remove_placement_group(PlacementGroup(PlacementGroupID(group.placement_group_id)))
            released.append(group_id)
            log.warning("released placement group %s: the actor that created it is dead", group_id)
    return released


def actor_lost(exc: RayActorError) -> str:
    """What the job's events say of an attempt whose actor died under it: its node lost (Ray's
    message names the node; the actor's lines its address), or the actor's own death."""
    said = str(getattr(exc, "error_msg", None) or exc)
    resumes = "a retry resumes from the job's last checkpoint, if it made one."
    if "because its node has died" in said:
        node = re.search(r"Node Id: ([0-9a-f]+)", said)
        ip = re.search(r"^\s*ip: (\S+)", said, re.MULTILINE)
        where = [f"ip {ip.group(1)}"] if ip else []
        where += [f"node {node.group(1)[:12]}"] if node else []
        return (
            f"The Ray node running the attempt ({', '.join(where) or 'unknown'}) was lost, and its "
            f"actor with it; {resumes}"
        )
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    last = lines[-1][:300] if lines else type(exc).__name__
    return f"The attempt's Ray actor died ({last}); {resumes}"


def near_this_process() -> Any:
    """Ray's scheduling strategy for an actor that must share this process's fate: on its node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def where() -> dict[str, Any]:
    """The Ray node this process runs on (for the attempt's events)."""
    return {
        "executor": "ray",
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
    }
