"""Fine-tuned adapters called by their `ft:<base>:<org>:<suffix>:<job>` id: the running deployment of
their base version answers, with the adapter applied per row by its engine (engine/lora.py).

`Adapters.acquire` turns the id into a `ServedModel` whose runtime is the base deployment's runtime
bound to the adapter, whose `name` is the id (the response's `model`) and whose `version_id` is the
adapter's own version, so usage by model shows the adapter and a marketplace listing of it prices
it; plan prices without a model apply as to the base. Who may call it: the organisation whose job
made it, or any organisation while a live marketplace listing sells its version, on that caller's
own deployment of the base version (deployed from the base's listing, for a buyer). Anyone else, or
an id that names no succeeded job, gets 404 `model_not_found`, as for a model that does not exist.

A checkpoint's id (`<adapter id>:ckpt-step-<N>`, training/finetune_checkpoints.py) is served the same
way, under the same rules and the adapter's version, with the weights its job wrote at that step
(its own key in the engine's adapter slots); once they are deleted with the job's artifacts, 404.

The id's lookup reads the database (in a thread) once per organisation and id, then is answered
from memory for `ttl_s` seconds, so a withdrawn listing or deleted version stops answering soon
after. An in-process deployment's engine reads the adapter's files from a local copy this process
makes once (serving/adapter_files.py); a deployment on Ray replicas (serving/ray_llm.py) gets the
adapter's stored path with each request, and each replica copies the files from the shared store
itself, once. A base scaled to zero (`min_replicas: 0`) is loaded by its adapter's request too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from anyio import to_thread
from sqlalchemy import select

from openmaas import errors
from openmaas.billing.tables import Listing
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.engine.lora import ADAPTER_WEIGHTS
from openmaas.jobs.tables import Job
from openmaas.registry.manifest import is_adapter
from openmaas.registry.tables import ModelVersion
from openmaas.serving.adapter_files import AdapterFiles, StoredAdapter
from openmaas.serving.directory import ServedModel, ServedModels
from openmaas.serving.openai_types import ModelCard
from openmaas.serving.tables import Deployment
from openmaas.storage import ArtifactStore
from openmaas.tasks import TEXT_GENERATION
from openmaas.training.finetune_checkpoints import checkpoint_adapter_path, parse_checkpoint_model

PREFIX = "ft:"
_FINE_TUNE_KIND = "fine_tune"


class ScaledToZero(Protocol):
    """The deployments unloaded while idle, as the replica manager keeps them."""

    def cold_models(self, org_id: str) -> list[ServedModel]: ...

    async def acquire(self, org_id: str, name: str) -> ServedModel:
        """Load one and wait for it (503 `model_loading` when that takes longer than a request waits)."""
        ...


@dataclass(frozen=True)
class _Adapter:
    name: str  # the id it was called by
    version_id: str
    lora_id: str  # the engine's key for its weights: the version's id, or a checkpoint's own
    base_version_id: str
    base_ref: str  # `name:N` of the base, for messages
    owner_org_id: str
    created: int  # Unix seconds: when its version was registered
    artifact_path: str
    expires: float  # monotonic seconds


class Adapters:
    def __init__(
        self,
        db: Database,
        store: ArtifactStore,
        directory: ServedModels,
        clock: Clock,
        *,
        ttl_s: float = 30.0,
        scaled_to_zero: ScaledToZero | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._directory = directory
        self._clock = clock
        self._ttl_s = ttl_s
        self._scaled_to_zero = scaled_to_zero
        self._known: dict[tuple[str, str], _Adapter] = {}
        self._files = AdapterFiles(store)  # for the engines of this process

    async def acquire(self, org_id: str, name: str) -> ServedModel:
        """The model answering `name` (an `ft:` id) for `org_id`: its base deployment with the adapter."""
        adapter = await self._adapter(org_id, name)
        base = self._base_deployment(org_id, adapter.base_version_id)
        if base is None or base.runtime.max_lora_rank is None:
            base = await self._woken_base(org_id, name, adapter, base)
        runtime: Any = base.runtime
        rank = runtime.max_lora_rank
        if rank is None:
            raise _adapters_disabled(base, adapter)
        stored = StoredAdapter(adapter.lora_id, adapter.artifact_path, name)
        if hasattr(runtime, "with_stored_adapter"):  # replicas on Ray (serving/ray_llm.py)
            # Each replica copies and checks the adapter itself before it admits the request.
            runtime = runtime.with_stored_adapter(stored)
        else:
            lora = self._files.ready(stored, rank)
            if lora is None:
                lora = await to_thread.run_sync(self._files.prepare, stored, rank)
            runtime = runtime.with_adapter(lora)
        return replace(
            base, name=name, version_id=adapter.version_id, runtime=runtime, routes=(), cumulative=()
        )

    async def _woken_base(
        self, org_id: str, name: str, adapter: _Adapter, loaded: ServedModel | None
    ) -> ServedModel:
        """The caller's deployment of the base that scaled to zero (`min_replicas: 0`), loaded now;
        else `loaded` (one that serves no adapters, refused by the caller), or the error saying why
        there is none (503 while one loads, 409 when none is deployed)."""
        cold = [] if self._scaled_to_zero is None else self._scaled_to_zero.cold_models(org_id)
        for model in cold:
            if model.version_id == adapter.base_version_id and self._scaled_to_zero is not None:
                await self._scaled_to_zero.acquire(org_id, model.name)  # 503 past the wait
                woken = self._base_deployment(org_id, adapter.base_version_id)
                if woken is not None and woken.runtime.max_lora_rank is not None:
                    return woken
                loaded = loaded or woken
        if loaded is not None:
            return loaded
        states = await to_thread.run_sync(self._base_states, org_id, adapter.base_version_id)
        raise _not_deployed(name, adapter, states)

    async def card(self, org_id: str, name: str) -> ModelCard:
        """`models.retrieve` of an `ft:` id (or a checkpoint's) that `org_id` may call; 404 otherwise."""
        adapter = await self._adapter(org_id, name)
        return ModelCard(
            id=name, created=adapter.created, owned_by=adapter.owner_org_id, root=adapter.base_ref,
            parent=adapter.base_ref,
        )  # fmt: skip

    async def cards(self, org_id: str) -> list[ModelCard]:
        """The adapters `org_id` may call, for `/v1/models` (as OpenAI lists fine-tuned models, not
        their checkpoints): its own, and the published ones of bases it has deployed. Two queries
        whatever their number."""
        models = self._directory.visible_to(org_id)
        if self._scaled_to_zero is not None:  # they answer their adapters too (loaded on demand)
            models += self._scaled_to_zero.cold_models(org_id)
        deployed = {
            route.version_id
            for model in models
            if model.org_id == org_id
            for route in model.routes or (model,)
        }
        return await to_thread.run_sync(self._cards, org_id, deployed)

    def _cards(self, org_id: str, deployed_versions: set[str]) -> list[ModelCard]:
        columns = (Job.params, Job.org_id, ModelVersion.created_at, ModelVersion.manifest)
        adapters = (
            select(*columns)
            .select_from(ModelVersion)
            .join(Job, Job.id == ModelVersion.job_id)
            .where(Job.kind == _FINE_TUNE_KIND, Job.status == "succeeded")
        )
        with self._db.read_session() as session:
            rows = list(session.execute(adapters.where(ModelVersion.org_id == org_id)))
            if deployed_versions:
                live = select(Listing.model).where(Listing.withdrawn_at.is_(None))
                bought = adapters.where(
                    ModelVersion.parent_version_id.in_(deployed_versions),
                    ModelVersion.org_id != org_id,
                    ModelVersion.id.in_(live),
                )
                rows += session.execute(bought)
        cards = []
        for params, owner, created, manifest in rows:
            base = str((manifest or {}).get("base") or "") or None
            name = str((params or {}).get("fine_tuned_model") or "")
            if name:
                created_s = int(created.timestamp())
                cards.append(ModelCard(id=name, created=created_s, owned_by=owner, root=base, parent=base))
        return sorted(cards, key=lambda card: card.id)

    async def _adapter(self, org_id: str, name: str) -> _Adapter:
        adapter = self._known.get((org_id, name))
        if adapter is None or adapter.expires < self._clock.monotonic():
            adapter = await to_thread.run_sync(self._look_up, org_id, name)
            if len(self._known) >= 10_000:  # ids called once long ago: start over
                self._known.clear()
            self._known[(org_id, name)] = adapter
        return adapter

    def _base_deployment(self, org_id: str, base_version_id: str) -> ServedModel | None:
        """The caller's loaded deployment serving the base version (for a traffic split, the route):
        the first by name whose engine serves adapters, else the first (which refuses them)."""
        found = None
        for model in self._directory.visible_to(org_id):
            if model.org_id != org_id:
                continue
            for route in model.routes or (model,):
                if route.version_id == base_version_id and route.runtime.task == TEXT_GENERATION:
                    if route.runtime.max_lora_rank is not None:
                        return route
                    found = found or route
        return found

    def _look_up(self, org_id: str, name: str) -> _Adapter:
        missing = errors.NotFound(
            f"The model {name!r} does not exist.", param="model", code="model_not_found"
        )
        checkpoint = parse_checkpoint_model(name)
        adapter_name = name if checkpoint is None else checkpoint[0]
        job_id = adapter_name.rsplit(":", 1)[-1]
        with self._db.read_session() as session:
            job = session.get(Job, job_id)
            if job is None or job.kind != _FINE_TUNE_KIND or job.status != "succeeded":
                raise missing
            if (job.params or {}).get("fine_tuned_model") != adapter_name or not job.result:
                raise missing  # the parts before the job id do not match
            version = session.get(ModelVersion, job.result.get("model_version_id", ""))
            if version is None or not is_adapter(version.manifest):
                raise missing
            if job.org_id != org_id:
                listed = session.scalar(
                    select(Listing.id).where(Listing.model == version.id, Listing.withdrawn_at.is_(None))
                )
                if listed is None:
                    raise missing  # another organisation's adapter: 404, as if it did not exist
            manifest = version.manifest or {}
        lora_id, artifact_path = version.id, version.artifact_path
        if checkpoint is not None:  # its own weights, billed and sold as the adapter it led to
            lora_id, artifact_path = (
                f"{version.id}-step-{checkpoint[1]}",
                checkpoint_adapter_path(self._store, job_id, checkpoint[1]),
            )
            if ADAPTER_WEIGHTS not in self._store.listdir(artifact_path):
                raise missing  # no such step, or deleted with the job's artifacts
        return _Adapter(
            name=name,
            version_id=version.id,
            lora_id=lora_id,
            base_version_id=str(manifest.get("base_version_id", "")),
            base_ref=str(manifest.get("base", "its base model")),
            owner_org_id=job.org_id,
            created=int(version.created_at.timestamp()),
            artifact_path=artifact_path,
            expires=self._clock.monotonic() + self._ttl_s,
        )

    def _base_states(self, org_id: str, base_version_id: str) -> set[str]:
        """The states of the caller's deployments of the base version."""
        with self._db.read_session() as session:
            return set(
                session.scalars(
                    select(Deployment.state).where(
                        Deployment.org_id == org_id, Deployment.version_id == base_version_id
                    )
                )
            )

    def close(self) -> None:
        self._files.close()


def _not_deployed(name: str, adapter: _Adapter, states: set[str]) -> errors.OpenMaaSError:
    """No loaded deployment of the base: 503 while one is starting, else 409 saying to deploy it."""
    if states & {"pending", "loading", "ready"}:
        return errors.ServiceUnavailable(
            f"The base model {adapter.base_ref} of {name!r} is still loading; retry shortly.",
            retry_after=2,
            code="model_loading",
        )
    return errors.Conflict(
        f"{name!r} is a LoRA adapter of {adapter.base_ref}, which has no running deployment: deploy "
        f"{adapter.base_ref} (POST /v1/deployments) to call its adapters.",
        param="model",
        code="base_not_deployed",
    )


def _adapters_disabled(base: ServedModel, adapter: _Adapter) -> errors.Conflict:
    return errors.Conflict(
        f"The deployment {base.name!r} of {adapter.base_ref} serves no adapters (its engine setting "
        "max_loras is 0); update it with max_loras of 1 or more to call its adapters.",
        param="model",
        code="adapters_disabled",
    )
