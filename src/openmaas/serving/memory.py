"""The serving memory budget: how much a loaded deployment is reckoned to hold, and which idle
deployments to unload (least recently used first) so that another one fits.

Pure decisions on numbers; the replica manager does the unloading. A deployment is reckoned at its
artifact's bytes (the weights dominate) times its replica count: each replica holds a copy.
Replicas on Ray are not counted in this budget: each reserves its node's CPUs, GPUs and memory
through Ray's resources (serving/ray_pool.py). Room for them is decided per node instead
(`choose_ray_evictions`): from what each node has unreserved and what this server's idle
deployments hold there, the least recently used go until every new replica has a node, or none
go and the load fails as one that does not fit this budget does (`InsufficientMemory`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from openmaas import errors

MIB = 1024 * 1024


class InsufficientMemory(errors.ServiceUnavailable):
    """No room to load a deployment now (503 with Retry-After; it stays `ready` when it was)."""

    default_code = "insufficient_memory"


@dataclass(frozen=True)
class Resident:
    """A loaded deployment as the budget sees it."""

    deployment_id: str
    size_bytes: int
    last_used: float  # the clock's monotonic seconds at its latest request (or its load)
    busy: bool  # requests in flight, or a runtime that cannot tell: never evicted


def artifact_bytes(folder: Path | None) -> int:
    """The bytes of every file in a model folder (0 for a missing one)."""
    if folder is None or not folder.is_dir():
        return 0
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def choose_evictions(residents: Sequence[Resident], need: int, budget: int) -> list[str] | None:
    """The deployments to unload, least recently used first, so that `need` more bytes fit in
    `budget`: [] when it already fits, None when even unloading every idle one would not do."""
    used = sum(r.size_bytes for r in residents)
    if used + need <= budget:
        return []
    if need > budget:
        return None
    chosen: list[str] = []
    for resident in _idle_oldest_first(residents):
        chosen.append(resident.deployment_id)
        used -= resident.size_bytes
        if used + need <= budget:
            return chosen
    return None


@dataclass(frozen=True)
class Reserve:
    """Ray resources: what a replica reserves, or what a node has unreserved."""

    cpus: float = 0.0
    gpus: float = 0.0
    memory_bytes: int = 0

    def __add__(self, other: Reserve) -> Reserve:
        return Reserve(self.cpus + other.cpus, self.gpus + other.gpus, self.memory_bytes + other.memory_bytes)

    def __sub__(self, other: Reserve) -> Reserve:
        return Reserve(self.cpus - other.cpus, self.gpus - other.gpus, self.memory_bytes - other.memory_bytes)

    def covers(self, need: Reserve) -> bool:
        # Ray counts CPUs and GPUs in 1/10000ths: a float sum's last bits are not a shortfall.
        return (
            self.cpus >= need.cpus - 1e-6
            and self.gpus >= need.gpus - 1e-6
            and self.memory_bytes >= need.memory_bytes
        )


@dataclass(frozen=True)
class RayResident:
    """A deployment this server holds on Ray, as the per-node decision sees it."""

    deployment_id: str
    holds: Mapping[str, Reserve]  # node id -> what its replicas reserve there
    last_used: float
    busy: bool  # requests in flight, not allowed to scale to zero, or the one being loaded


def choose_ray_evictions(
    free: Mapping[str, Reserve], residents: Sequence[RayResident], replicas: Sequence[Reserve]
) -> list[str] | None:
    """The deployments to unload so that every one of `replicas` has a node, given what each node
    has unreserved (`free`, by node id): [] when they can be placed now, None when even unloading
    every idle one would not do. The least recently used are taken until it would, then any of
    them whose replicas turned out not to matter (on another node) are kept after all."""
    if _placeable(free, replicas):
        return []
    room = dict(free)
    chosen: list[RayResident] = []
    for resident in _idle_oldest_first(residents):
        chosen.append(resident)
        room = _with(room, resident)
        if _placeable(room, replicas):
            break
    else:
        return None
    for resident in reversed(chosen[:-1]):  # the last one was needed: without it, no room
        without = [r for r in chosen if r is not resident]
        if _placeable(_freed(free, without), replicas):
            chosen = without
    return [r.deployment_id for r in chosen]


def _freed(free: Mapping[str, Reserve], unloaded: Iterable[RayResident]) -> dict[str, Reserve]:
    room = dict(free)
    for resident in unloaded:
        room = _with(room, resident)
    return room


def _with(room: dict[str, Reserve], unloaded: RayResident) -> dict[str, Reserve]:
    """`room` once `unloaded`'s replicas are gone (a node that left gives nothing back)."""
    return {node: left + unloaded.holds.get(node, Reserve()) for node, left in room.items()}


def _placeable(free: Mapping[str, Reserve], replicas: Sequence[Reserve]) -> bool:
    """Whether each replica can have a node: the largest first, each on the node with the most
    memory left that covers it (exact for replicas alike, as a deployment's are)."""
    room = dict(free)
    for need in sorted(replicas, key=lambda r: (r.memory_bytes, r.gpus, r.cpus), reverse=True):
        fitting = [node for node, left in room.items() if left.covers(need)]
        if not fitting:
            return False
        node = max(fitting, key=lambda n: room[n].memory_bytes)
        room[node] = room[node] - need
    return True


class _Ranked(Protocol):
    @property
    def busy(self) -> bool: ...
    @property
    def last_used(self) -> float: ...


_R = TypeVar("_R", bound=_Ranked)


def _idle_oldest_first(residents: Iterable[_R]) -> list[_R]:
    return sorted((r for r in residents if not r.busy), key=lambda r: r.last_used)
