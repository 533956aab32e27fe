"""The directory of models that can be called right now, per organisation.

Deployments register here (with their loaded runtime) when they become ready and leave when
stopped; `GET /v1/models` and the OpenAI-style routes look names up here without touching the
database. A model is visible to its own organisation and, when published, to every organisation.
A deployment that splits its traffic between versions registers one entry whose `routes` hold each
version's own entry; `pick` draws one per request.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ServedModel:
    name: str
    org_id: str
    owner: str
    created: int
    published: bool = False
    deployment_id: str = ""
    version_id: str = ""
    runtime: Any = None
    # A traffic split: each version's own entry, and the running sums of their percent weights.
    routes: tuple[ServedModel, ...] = ()
    cumulative: tuple[int, ...] = ()

    def pick(self, draw: float) -> ServedModel:
        """The version that answers a request, for a uniform `draw` in [0, 100)."""
        if not self.routes:
            return self
        return self.routes[min(bisect_right(self.cumulative, draw), len(self.routes) - 1)]

    def runtimes(self) -> list[Any]:
        """Every runtime this entry holds (one per version of a split)."""
        models = self.routes or (self,)
        return [m.runtime for m in models if m.runtime is not None]


class ServedModels:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], ServedModel] = {}

    def register(self, model: ServedModel) -> None:
        with self._lock:
            self._models[(model.org_id, model.name)] = model

    def unregister(self, org_id: str, name: str) -> ServedModel | None:
        with self._lock:
            return self._models.pop((org_id, name), None)

    def lookup(self, org_id: str, name: str) -> ServedModel | None:
        """The caller's own model of that name (a dict lookup: this is on every inference call)."""
        return self._models.get((org_id, name))

    def visible_to(self, org_id: str) -> list[ServedModel]:
        with self._lock:
            models = [m for m in self._models.values() if m.org_id == org_id or m.published]
        return sorted(models, key=lambda m: m.name)

    def all(self) -> list[ServedModel]:
        with self._lock:
            return list(self._models.values())
