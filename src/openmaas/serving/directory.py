"""The directory of models that can be called right now, per organisation.

Deployments register here when they become ready and leave when stopped; `GET /v1/models` and
the OpenAI-style routes look names up here. A model is visible to its own organisation and, when
published, to every organisation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServedModel:
    name: str
    org_id: str
    owner: str
    created: int
    published: bool = False


class ServedModels:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], ServedModel] = {}

    def register(self, model: ServedModel) -> None:
        with self._lock:
            self._models[(model.org_id, model.name)] = model

    def unregister(self, org_id: str, name: str) -> None:
        with self._lock:
            self._models.pop((org_id, name), None)

    def visible_to(self, org_id: str) -> list[ServedModel]:
        with self._lock:
            models = [m for m in self._models.values() if m.org_id == org_id or m.published]
        return sorted(models, key=lambda m: m.name)
