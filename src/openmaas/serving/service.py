"""Deployments: create, list, stop and delete, and the state changes replicas report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session
from sqlalchemy.orm.util import identity_key

from openmaas import errors, logs
from openmaas.billing import marketplace
from openmaas.ids import new_id
from openmaas.pagination import paginate
from openmaas.registry.manifest import is_adapter
from openmaas.registry.tables import ModelVersion
from openmaas.schemas.pages import Page
from openmaas.schemas.serving import (
    DeploymentCreate,
    DeploymentEventPublic,
    DeploymentPublic,
    DeploymentUpdate,
    TrafficPublic,
)
from openmaas.serving import traffic
from openmaas.serving.deployment_config import (
    DEFAULT_IDLE_TIMEOUT_S,
    ENGINE_SETTINGS,
    DeploymentConfig,
    EngineSettings,
    TrafficRoute,
    engine_setting_error,
    engine_settings_conflict,
)
from openmaas.serving.placement import placement_settings
from openmaas.serving.runtimes import PREDICT_TASKS, deployable_tasks
from openmaas.serving.tables import Deployment, DeploymentEvent
from openmaas.tasks import TEXT_GENERATION

log = logging.getLogger("openmaas.serving")

ACTIVE_STATES = ("pending", "loading", "ready")


# The version id this server serves for a deployment now, None when it holds no runtime:
# `(org id, name) -> version id | None`.
LoadedVersion = Callable[[str, str], str | None]


def public(row: Deployment, loaded: LoadedVersion | None = None) -> DeploymentPublic:
    loaded_id = None if loaded is None else loaded(row.org_id, row.name)
    serving, starting = _serving_and_starting(row, loaded_id)
    return DeploymentPublic(
        id=row.id,
        name=row.name,
        model=row.model_ref,
        version_id=row.version_id,
        task=row.task,
        state=row.state,  # type: ignore[arg-type]
        replicas=row.replicas,
        config=row.config,
        traffic=[
            TrafficPublic(version=route.version, version_id=route.version_id, weight=route.weight)
            for route in DeploymentConfig.from_stored(row.config).traffic
        ],
        scaled_to_zero=row.state == "ready" and loaded is not None and loaded_id is None,
        serving=serving,
        starting=starting,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _serving_and_starting(row: Deployment, loaded_id: str | None) -> tuple[str | None, str | None]:
    """`name:N` of the version answering now and of the one loading (during an update, the old
    one serves while the new one starts)."""
    session = object_session(row)
    if session is None or row.state in ("failed", "stopped"):
        return None, None

    def ref(version_id: str) -> str:
        version = session.get(ModelVersion, version_id)
        return traffic.ref(session, version) if version is not None else version_id

    if row.state == "ready":
        return ref(row.version_id), None
    return (ref(loaded_id) if loaded_id else None), ref(row.version_id)


def create(session: Session, org_id: str, body: DeploymentCreate, now: datetime) -> DeploymentPublic:
    # The caller's own version, or another organisation's through its marketplace listing (lst_…).
    model, version = marketplace.deployable_version(session, org_id, body.model)
    _refuse_adapter(version, body.model, "model")
    if version.task not in deployable_tasks():
        raise errors.ValidationFailed(
            f"{body.model!r} is a {version.task} model, which this server cannot deploy yet; "
            f"deployable tasks: {sorted(deployable_tasks())}.",
            param="model",
            code="task_not_deployable",
        )
    engine = _engine_settings(version.task, body.engine)
    _check_scaling(version.task, body.min_replicas, body.placement)
    placed = placement_settings(version.task, body.placement, body.cpus, body.gpus, engine.device)
    name = body.name or model.name
    if session.scalar(select(Deployment.id).where(Deployment.org_id == org_id, Deployment.name == name)):
        raise errors.Conflict(f"A deployment named {name!r} already exists.", param="name")
    row = Deployment(
        id=new_id("dep_"),
        org_id=org_id,
        name=name,
        model_ref=body.model,
        version_id=version.id,
        task=version.task,
        state="pending",
        replicas=body.replicas,
        config=DeploymentConfig(
            max_batch_size=body.max_batch_size,
            max_wait_ms=body.max_wait_ms,
            max_queue=body.max_queue,
            min_replicas=body.min_replicas,
            idle_timeout_s=body.idle_timeout_s or DEFAULT_IDLE_TIMEOUT_S,
            engine=engine,
            **placed,
        ).to_stored(),
        error=None,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise errors.Conflict(f"A deployment named {name!r} already exists.", param="name") from exc
    add_event(session, row.id, "created", f"deploying {body.model} (version {version.version})", now)
    return public(row)


def _engine_settings(task: str, given: dict[str, Any]) -> EngineSettings:
    """A create's `engine` settings, checked: known names, values of their types, LLMs only."""
    unknown = sorted(set(given) - set(ENGINE_SETTINGS))
    if unknown or (given and task != TEXT_GENERATION):
        raise errors.ValidationFailed(
            f"Unknown engine setting(s) {unknown}; allowed: {sorted(ENGINE_SETTINGS)}."
            if unknown
            else "Engine settings apply to text-generation models only.",
            param="engine",
        )
    for key, value in given.items():
        if (why := engine_setting_error(key, value)) is not None:
            raise errors.ValidationFailed(f"{why}, got {value!r}.", param=f"engine.{key}")
    if (conflict := engine_settings_conflict(given)) is not None:
        raise errors.ValidationFailed(f"{conflict[1]}.", param=f"engine.{conflict[0]}")
    return EngineSettings(**given)


def get(session: Session, org_id: str, id_or_name: str) -> Deployment:
    row = session.scalar(
        select(Deployment).where(
            Deployment.org_id == org_id, or_(Deployment.id == id_or_name, Deployment.name == id_or_name)
        )
    )
    if row is None:
        raise errors.NotFound(f"No deployment {id_or_name!r}.", param="deployment")
    return row


def list_page(
    session: Session, org_id: str, *, limit: int, after: str | None, loaded: LoadedVersion | None = None
) -> Page[DeploymentPublic]:
    query = select(Deployment).where(Deployment.org_id == org_id)
    return paginate(
        session, query, Deployment.id, limit=limit, after=after, to_public=lambda row: public(row, loaded)
    )


def stop(session: Session, org_id: str, id_or_name: str, now: datetime) -> DeploymentPublic:
    row = get(session, org_id, id_or_name)
    if row.state != "stopped":
        row.state, row.updated_at = "stopped", now
        add_event(session, row.id, "stopped", "stopped on request", now)
    return public(row)


@dataclass(frozen=True)
class Served:
    """What a deployment served before an update, to go back to if the new version fails to load."""

    model_ref: str
    version_id: str
    task: str
    replicas: int
    config: DeploymentConfig


def update(
    session: Session, org_id: str, id_or_name: str, body: DeploymentUpdate, now: datetime
) -> tuple[Deployment, Served]:
    """Point a ready (or failed) deployment at another version or settings of the same task
    (the replicas then roll it, `serving.rollout`); the changed row, and what it served before."""
    row = get(session, org_id, id_or_name)
    if row.state not in ("ready", "failed"):
        raise errors.Conflict(
            f"Deployment {row.name!r} is {row.state}; update it once it is ready.", param="deployment"
        )
    stored = DeploymentConfig.from_stored(row.config)
    before = Served(row.model_ref, row.version_id, row.task, row.replicas, stored)
    if body.model is not None and body.traffic is not None:
        raise errors.ValidationFailed("Give either model or traffic, not both.", param="traffic")
    changes = body.model_dump(exclude_none=True, exclude={"model", "replicas", "traffic"})
    split: tuple[TrafficRoute, ...] | None = None
    if body.model is not None:
        version = _replacement(session, org_id, row.task, body.model, "model")
        row.model_ref, row.version_id, row.task = body.model, version.id, version.task
        split = ()
        message = f"updating to {row.model_ref}"
    elif body.traffic is not None:
        split = traffic.resolve(session, org_id, body.traffic)
        primary = max(split, key=lambda route: route.weight)  # the first of the heaviest
        version = _replacement(session, org_id, row.task, primary.version, "traffic.0.version")
        row.model_ref, row.version_id, row.task = primary.version, version.id, version.task
        message = f"traffic: {traffic.describe(split)}"
    else:
        message = f"updating to {row.model_ref}"
    config = stored.updated(changes, split)
    _check_scaling(row.task, config.min_replicas, config.placement)
    row.config = config.to_stored()
    row.replicas = body.replicas or row.replicas
    row.state, row.error, row.updated_at = "loading", None, now
    if body.strategy == "recreate":
        message += " (recreate: the old version stops first)"
    add_event(session, row.id, "updating", message, now)
    return row, before


def _replacement(session: Session, org_id: str, task: str, ref: str, param: str) -> ModelVersion:
    """The version `ref` names, deployable in place of a `task` model. An LLM's clients call the
    OpenAI routes, which no other task answers: it is replaced by another LLM only, and only by one."""
    try:
        _, version = marketplace.deployable_version(session, org_id, ref)
    except errors.NotFound as exc:  # an unknown model name is reported against `model`
        raise errors.NotFound(exc.message, param=param, code=exc.code) from None
    _refuse_adapter(version, ref, param)
    if version.task not in deployable_tasks():
        raise errors.ValidationFailed(
            f"{ref!r} is a {version.task} model, which this server cannot deploy yet.",
            param=param,
            code="task_not_deployable",
        )
    if TEXT_GENERATION in (task, version.task) and version.task != task:
        raise errors.ValidationFailed(
            f"{ref!r} is a {version.task} model; this deployment serves a {task} model and can be "
            f"updated only to another {task} model (deploy it under another name instead).",
            param=param,
            code="incompatible_task",
        )
    return version


def _refuse_adapter(version: ModelVersion, ref: str, param: str) -> None:
    """A fine-tuning job's LoRA adapter is no model of its own: 422 naming `param`."""
    if not is_adapter(version.manifest):
        return
    base = version.manifest.get("base") or "its base model"
    raise errors.ValidationFailed(
        f"{ref!r} is a LoRA adapter of {base}, not a model of its own: adapters are served through "
        "their base model's deployment, never deployed on their own. Deploy the base and call the "
        "adapter by its fine-tuned model id (`ft:…`) as `model` in chat, completions and responses calls.",
        param=param,
        code="adapter_not_deployable",
    )


def _check_scaling(task: str, min_replicas: int, placement: str) -> None:
    """Scaling to zero needs a runtime that can tell it is idle: the ones /predict serves, and LLM
    and embedding replicas on Ray (whose API server counts their requests)."""
    if min_replicas == 0 and task not in PREDICT_TASKS and placement != "ray":
        raise errors.ValidationFailed(
            f"min_replicas 0 (scale to zero) applies to models served by /predict, and to {task} models "
            f'only with "placement": "ray", not to in-process {task} models.',
            param="min_replicas",
        )


def revert(session: Session, deployment_id: str, before: Served, now: datetime, error: str) -> None:
    """The update failed to load: the deployment keeps serving what it served before."""
    row = session.get(Deployment, deployment_id)
    if row is None or row.state == "stopped":
        return
    row.model_ref, row.version_id, row.task = before.model_ref, before.version_id, before.task
    row.replicas, row.config = before.replicas, before.config.to_stored()
    row.state, row.error, row.updated_at = "ready", None, now
    add_event(session, deployment_id, "update_failed", error, now)


def switched(session: Session, deployment_id: str, now: datetime, message: str) -> None:
    """An update's new version took over: the deployment is ready again."""
    row = session.get(Deployment, deployment_id)
    if row is None or row.state == "stopped":
        return
    row.state, row.error, row.updated_at = "ready", None, now
    add_event(session, deployment_id, "switched", message, now)


def delete(session: Session, org_id: str, id_or_name: str) -> DeploymentPublic:
    row = get(session, org_id, id_or_name)
    session.delete(row)
    return public(row)


def set_state(
    session: Session, deployment_id: str, state: str, now: datetime, error: str | None = None
) -> None:
    row = session.get(Deployment, deployment_id)
    if row is None or row.state == "stopped":
        return  # deleted or stopped while loading: nothing to record
    row.state, row.error, row.updated_at = state, error, now
    add_event(session, deployment_id, state, error or state, now)


def add_event(session: Session, deployment_id: str, kind: str, message: str, now: datetime) -> None:
    """Record a deployment event; the server log tells it once it commits (failures as errors)."""
    session.add(
        DeploymentEvent(
            id=new_id("dev_"), deployment_id=deployment_id, created_at=now, kind=kind, message=message
        )
    )
    row = session.identity_map.get(identity_key(Deployment, deployment_id))  # loaded: no query
    logs.event_after_commit(
        session,
        log,
        "deployment_event",
        level=logging.ERROR if kind == "failed" else logging.INFO,
        deployment_id=deployment_id,
        org_id=getattr(row, "org_id", None),
        kind=kind,
        message=message,
    )


def events(
    session: Session, org_id: str, id_or_name: str, *, limit: int, after: str | None
) -> Page[DeploymentEventPublic]:
    row = get(session, org_id, id_or_name)
    query = select(DeploymentEvent).where(DeploymentEvent.deployment_id == row.id)
    return paginate(
        session,
        query,
        DeploymentEvent.id,
        limit=limit,
        after=after,
        to_public=lambda e: DeploymentEventPublic(
            id=e.id, created_at=e.created_at, kind=e.kind, message=e.message
        ),
    )


def active(session: Session) -> list[Deployment]:
    return list(session.scalars(select(Deployment).where(Deployment.state.in_(ACTIVE_STATES))))
