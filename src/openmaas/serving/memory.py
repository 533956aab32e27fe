"""The serving memory budget: how much a loaded deployment is reckoned to hold, and which idle
deployments to unload (least recently used first) so that another one fits.

Pure decisions on numbers; the replica manager does the unloading. A deployment is reckoned at its
artifact's bytes (the weights dominate) times its replica count: each replica holds a copy.
Replicas on Ray are not counted here: each reserves its node's memory through Ray's `memory`
resource (serving/ray_pool.py), and a load that finds no node with room fails as one that does
not fit this budget does (`InsufficientMemory`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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


def _idle_oldest_first(residents: Iterable[Resident]) -> list[Resident]:
    return sorted((r for r in residents if not r.busy), key=lambda r: r.last_used)
