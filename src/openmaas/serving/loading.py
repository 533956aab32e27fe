"""What loading one deployment needs, read in one transaction: its versions' folders (several for
a traffic split), settings and size, and how to build and publish its runtimes.

Building runtimes is slow (it reads weights): the replica manager calls `Target.load` on its
loader thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from sqlalchemy.orm import Session

from openmaas.registry.tables import ModelVersion
from openmaas.serving import traffic
from openmaas.serving.deployment_config import DeploymentConfig, RuntimeConfig, TrafficRoute
from openmaas.serving.directory import ServedModel
from openmaas.serving.memory import Reserve
from openmaas.serving.runtimes import load_runtime
from openmaas.serving.tables import Deployment
from openmaas.storage import ArtifactStore
from openmaas.tasks import SENTENCE_EMBEDDING, TEXT_GENERATION


@dataclass(frozen=True)
class Route:
    """One version a deployment serves, with its share of requests in percent."""

    version_id: str
    ref: str  # `name:version`, what a prediction reports as its answering model
    weight: int
    artifact: str | None  # its folder in the artifact store (None: the version was deleted)


@dataclass(frozen=True)
class Target:
    deployment_id: str
    org_id: str
    name: str
    task: str
    config: DeploymentConfig
    replicas: int
    created: int
    routes: tuple[Route, ...]
    size_bytes: int  # what this server's memory budget reckons it holds once loaded
    store: ArtifactStore
    ray_address: str | None = None  # the cluster `placement: ray` replicas run on
    # Records a deployment event `(kind, message)` without blocking (replicas on Ray dying and
    # coming back); None: not recorded.
    events: Callable[[str, str], None] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.org_id, self.name)

    def load(self) -> list[Any]:
        """One runtime per route; if one fails, those already built are closed."""
        runtimes: list[Any] = []
        try:
            for route in self.routes:
                if route.artifact is None:
                    raise FileNotFoundError(f"the model version {route.ref} was deleted")
                config = self.config.for_runtime(route.ref, self.replicas)
                if self.config.placement == "ray":
                    runtimes.append(self._on_ray(route.artifact, config))
                    continue
                # A runtime reads its files while it is built, and holds what it needs after.
                with self.store.reading(route.artifact) as folder:
                    runtimes.append(load_runtime(self.task, folder, config))
        except BaseException:
            for runtime in runtimes:
                runtime.close()
            raise
        return runtimes

    def _on_ray(self, artifact: str, config: RuntimeConfig) -> Any:
        """The version's replicas as Ray actors, each loading it from the shared store and
        reserving its CPUs, GPUs and the version's size of its node's memory (with, for an LLM on
        CPU, its engine's KV cache)."""
        from openmaas.serving import ray_pool

        if not self.ray_address:
            raise RuntimeError("placement ray: this server has no Ray cluster (set OPENMAAS_RAY_ADDRESS)")
        ray_pool.connect(self.ray_address)
        spec = ray_pool.replica_spec(
            self.task,
            self.store.url,
            artifact,
            config,
            self.config.cpus,
            self.config.gpus,
            self._ray_memory_bytes(artifact, config),
        )
        if self.task == TEXT_GENERATION:
            from openmaas.serving.ray_llm import RayLLMRuntime

            return RayLLMRuntime(spec, self.replicas, self.events)
        if self.task == SENTENCE_EMBEDDING:
            from openmaas.serving.ray_embeddings import RayEmbeddingRuntime

            return RayEmbeddingRuntime(spec, self.replicas, self.events)
        from openmaas.serving.ray_replicas import RayPredictorRuntime

        return RayPredictorRuntime(spec, self.replicas, self.events)

    def ray_replicas(self) -> list[Reserve]:
        """What each of its Ray replicas reserves on its node (`replicas` per version it serves)."""
        replicas: list[Reserve] = []
        for route in self.routes:
            if route.artifact is None:
                continue  # deleted: its load fails before it reserves anything
            config = self.config.for_runtime(route.ref, self.replicas)
            memory_bytes = self._ray_memory_bytes(route.artifact, config)
            replicas += [Reserve(self.config.cpus, self.config.gpus, memory_bytes)] * max(1, self.replicas)
        return replicas

    def _ray_memory_bytes(self, artifact: str, config: RuntimeConfig) -> int:
        """Ray's `memory` a replica reserves: the version's size (with, for an LLM on CPU, its
        engine's KV cache)."""
        return self.store.size(artifact) + self._kv_cache_bytes(config)

    def _kv_cache_bytes(self, config: RuntimeConfig) -> int:
        """The node memory an LLM replica's KV cache takes beside its weights (none on a GPU)."""
        if self.task != TEXT_GENERATION or self.config.gpus > 0:
            return 0
        from openmaas.engine.config import EngineConfig

        return config.engine.kv_cache_memory_bytes or EngineConfig.kv_cache_memory_bytes

    def served(self, runtimes: list[Any]) -> ServedModel:
        """The directory entry: the runtime itself, or for a split one entry per version."""
        models = tuple(
            ServedModel(
                name=self.name,
                org_id=self.org_id,
                owner=self.org_id,
                created=self.created,
                deployment_id=self.deployment_id,
                version_id=route.version_id,
                runtime=runtime,
            )
            for route, runtime in zip(self.routes, runtimes, strict=True)
        )
        if len(models) == 1:
            return models[0]
        first = models[0]
        return ServedModel(
            name=first.name,
            org_id=first.org_id,
            owner=first.owner,
            created=first.created,
            deployment_id=first.deployment_id,
            version_id=first.version_id,
            runtime=first.runtime,
            routes=models,
            cumulative=tuple(accumulate(route.weight for route in self.routes)),
        )


def build_target(
    session: Session,
    row: Deployment,
    config: DeploymentConfig,
    versions: dict[str, ModelVersion],
    store: ArtifactStore,
    ray_address: str | None = None,
    events: Callable[[str, str], None] | None = None,
) -> Target:
    """The deployment's target; `config` is its parsed `config` column and `versions` its versions
    by id (missing: deleted). Replicas on Ray hold none of this server's memory: each reserves
    its node's through Ray's `memory` resource instead."""
    routes = tuple(
        _route(session, entry, versions.get(entry.version_id), store)
        for entry in config.routes(row.version_id)
    )
    return Target(
        deployment_id=row.id,
        org_id=row.org_id,
        name=row.name,
        task=row.task,
        config=config,
        replicas=row.replicas,
        created=int(row.created_at.timestamp()),
        routes=routes,
        size_bytes=0
        if config.placement == "ray"
        else sum(store.size(route.artifact) for route in routes if route.artifact) * max(1, row.replicas),
        store=store,
        ray_address=ray_address,
        events=events,
    )


def _route(
    session: Session, entry: TrafficRoute, version: ModelVersion | None, store: ArtifactStore
) -> Route:
    if version is None:
        return Route(entry.version_id, entry.version or entry.version_id, entry.weight, None)
    ref = traffic.ref(session, version)
    return Route(version.id, ref, entry.weight, version.artifact_path)
