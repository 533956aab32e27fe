"""The model registry: models, their immutable versions (artifact, manifest, metrics, lineage),
aliases and tags. Versions are addressed as `name`, `name:3` or `name@alias`; another
organisation's model is a 404.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.ids import new_id
from openmaas.pagination import paginate
from openmaas.registry import in_use
from openmaas.registry.refs import parse_ref
from openmaas.registry.tables import ModelAlias, ModelVersion, RegisteredModel
from openmaas.schemas.pages import Page
from openmaas.schemas.registry import (
    ALIAS_PATTERN,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    Lineage,
    ModelPublic,
    ModelVersionPublic,
)


def get_model(session: Session, org_id: str, name: str) -> RegisteredModel:
    model = find_model(session, org_id, name)
    if model is None:
        raise errors.NotFound(f"No model {name!r}.", param="model")
    return model


def find_model(session: Session, org_id: str, name: str) -> RegisteredModel | None:
    return session.scalar(
        select(RegisteredModel).where(RegisteredModel.org_id == org_id, RegisteredModel.name == name)
    )


def ensure_model(session: Session, org_id: str, name: str, task: str, now: datetime) -> RegisteredModel:
    """The model `name`, created on first use; its task never changes."""
    model = find_model(session, org_id, name)
    if model is None:
        model = RegisteredModel(
            id=new_id("mdl_"), org_id=org_id, name=name, task=task, tags={}, created_at=now
        )
        session.add(model)
        session.flush()
    elif model.task != task:
        raise errors.Conflict(f"Model {name!r} holds {model.task} models, not {task}.", param="model")
    return model


def register_version(
    session: Session,
    *,
    version_id: str,
    org_id: str,
    model_name: str,
    artifact_path: str,
    manifest: dict[str, Any],
    lineage: dict[str, str | None],
    now: datetime,
) -> tuple[RegisteredModel, ModelVersion]:
    model = ensure_model(session, org_id, model_name, str(manifest["task"]), now)
    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
    row = ModelVersion(
        id=version_id,
        model_id=model.id,
        org_id=org_id,
        version=(latest or 0) + 1,
        task=str(manifest["task"]),
        artifact_path=artifact_path,
        manifest=manifest,
        metrics=dict(manifest.get("metrics") or {}),
        tags={},
        dataset_id=lineage.get("dataset_id"),
        job_id=lineage.get("job_id"),
        parent_version_id=lineage.get("parent_version_id"),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return model, row


def resolve(
    session: Session, org_id: str, ref: str, param: str = "model"
) -> tuple[RegisteredModel, ModelVersion]:
    parsed = parse_ref(ref, param)
    model = get_model(session, org_id, parsed.name)
    query = select(ModelVersion).where(ModelVersion.model_id == model.id)
    if parsed.alias is not None:
        alias = session.get(ModelAlias, (model.id, parsed.alias))
        if alias is None:
            raise errors.NotFound(f"Model {parsed.name!r} has no alias {parsed.alias!r}.", param=param)
        query = query.where(ModelVersion.id == alias.version_id)
    elif parsed.version is not None:
        query = query.where(ModelVersion.version == parsed.version)
    version = session.scalar(query.order_by(ModelVersion.version.desc()).limit(1))
    if version is None:
        raise errors.NotFound(f"No model version {ref!r}.", param=param)
    return model, version


def aliases_of(session: Session, model_id: str) -> dict[str, str]:
    """alias → version id."""
    rows = session.scalars(select(ModelAlias).where(ModelAlias.model_id == model_id))
    return {row.alias: row.version_id for row in rows}


def version_public(
    session: Session,
    model: RegisteredModel,
    version: ModelVersion,
    *,
    manifest: bool = False,
    aliases: dict[str, str] | None = None,
) -> ModelVersionPublic:
    """`aliases` (alias → version id), when the caller read them once for many versions."""
    held = aliases_of(session, model.id) if aliases is None else aliases
    names = [alias for alias, vid in held.items() if vid == version.id]
    return ModelVersionPublic(
        id=version.id,
        model=model.name,
        version=version.version,
        ref=f"{model.name}:{version.version}",
        task=version.task,
        metrics=version.metrics,
        tags=version.tags,
        aliases=sorted(names),
        lineage=Lineage(
            dataset_id=version.dataset_id,
            job_id=version.job_id,
            parent_version_id=version.parent_version_id,
        ),
        created_at=version.created_at,
        manifest=version.manifest if manifest else None,
    )


def model_public(session: Session, model: RegisteredModel) -> ModelPublic:
    return models_public(session, [model])[0]


def models_public(session: Session, models: Sequence[RegisteredModel]) -> list[ModelPublic]:
    """The models with their latest version and aliases: two queries for all of them."""
    ids = [model.id for model in models]
    latest: dict[str, int] = dict(
        session.execute(
            select(ModelVersion.model_id, func.max(ModelVersion.version))
            .where(ModelVersion.model_id.in_(ids))
            .group_by(ModelVersion.model_id)
        ).all()
    )
    aliases: dict[str, dict[str, int]] = {model_id: {} for model_id in ids}
    rows = session.execute(
        select(ModelAlias.model_id, ModelAlias.alias, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == ModelAlias.version_id)
        .where(ModelAlias.model_id.in_(ids))
    )
    for model_id, alias, number in rows:
        aliases[model_id][alias] = number
    return [
        ModelPublic(
            id=model.id,
            name=model.name,
            task=model.task,
            tags=model.tags,
            latest_version=latest.get(model.id),
            aliases=aliases[model.id],
            created_at=model.created_at,
        )
        for model in models
    ]


def list_models(session: Session, org_id: str, *, limit: int, after: str | None) -> Page[ModelPublic]:
    query = select(RegisteredModel).where(RegisteredModel.org_id == org_id)
    return paginate(
        session,
        query,
        RegisteredModel.id,
        limit=limit,
        after=after,
        to_publics=lambda models: models_public(session, models),
    )


def list_versions(
    session: Session, org_id: str, name: str, *, limit: int, after: str | None
) -> Page[ModelVersionPublic]:
    model = get_model(session, org_id, name)
    aliases = aliases_of(session, model.id)
    query = select(ModelVersion).where(ModelVersion.model_id == model.id)
    return paginate(
        session,
        query,
        ModelVersion.id,
        limit=limit,
        after=after,
        to_public=lambda v: version_public(session, model, v, aliases=aliases),
    )


def versions_trained_on(session: Session, org_id: str, dataset_id: str, limit: int) -> list[str]:
    """The versions (`name:version`, oldest first, at most `limit`) whose lineage names the dataset."""
    rows = session.execute(
        select(RegisteredModel.name, ModelVersion.version)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(ModelVersion.org_id == org_id, ModelVersion.dataset_id == dataset_id)
        .order_by(ModelVersion.id)
        .limit(limit)
    )
    return [f"{name}:{version}" for name, version in rows]


def set_alias(
    session: Session, org_id: str, name: str, alias: str, version: int, now: datetime
) -> ModelPublic:
    if not re.fullmatch(ALIAS_PATTERN, alias):
        raise errors.ValidationFailed(
            "alias must start with a letter: letters, digits, '.', '_', '-'", param="alias"
        )
    model = get_model(session, org_id, name)
    _, target = resolve(session, org_id, f"{model.name}:{version}", param="version")
    existing = session.get(ModelAlias, (model.id, alias))
    if existing is None:
        session.add(ModelAlias(model_id=model.id, alias=alias, version_id=target.id, updated_at=now))
    else:
        existing.version_id, existing.updated_at = target.id, now
    session.flush()
    return model_public(session, model)


def remove_alias(session: Session, org_id: str, name: str, alias: str) -> ModelPublic:
    model = get_model(session, org_id, name)
    existing = session.get(ModelAlias, (model.id, alias))
    if existing is None:
        raise errors.NotFound(f"Model {name!r} has no alias {alias!r}.", param="alias")
    session.delete(existing)
    session.flush()
    return model_public(session, model)


def update_tags(session: Session, org_id: str, ref: str, tags: dict[str, str | None]) -> ModelVersionPublic:
    model, version = resolve(session, org_id, ref)
    merged = dict(version.tags)
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_TAG_KEY or (value is not None and len(value) > MAX_TAG_VALUE):
            raise errors.ValidationFailed(
                f"tag keys are 1-{MAX_TAG_KEY} characters, values at most {MAX_TAG_VALUE}",
                param=f"tags.{key}",
            )
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    version.tags = merged
    return version_public(session, model, version)


def delete_version(
    session: Session, org_id: str, ref: str, holders: Sequence[in_use.VersionHolder]
) -> tuple[ModelVersionPublic, str]:
    """Delete a version nothing uses (see `in_use`); returns it and its artifact path.

    409 `version_in_use`, naming each user, while an alias or one of `holders` (a live listing, a
    deployment or a traffic split) holds it; nothing is deleted then."""
    model, version = resolve(session, org_id, ref)
    public = version_public(session, model, version)
    users = in_use.users_of(session, version, holders)
    if users:
        raise _in_use(public.ref, users)
    path = version.artifact_path
    session.delete(version)
    try:
        session.flush()
    except IntegrityError as exc:  # a deployment of it was committed since the check above
        raise _in_use(public.ref, None) from exc
    return public, path


def delete_model(
    session: Session, org_id: str, name: str, holders: Sequence[in_use.VersionHolder]
) -> tuple[ModelPublic, list[str]]:
    """Delete a model with all its versions and aliases (its own aliases do not hold it); returns
    it and its versions' artifact paths. 409 `version_in_use` naming the version and its users
    while one of `holders` (a live listing, a deployment or a traffic split) uses any version;
    nothing is deleted then."""
    model = get_model(session, org_id, name)
    public = model_public(session, model)
    versions = list(
        session.scalars(
            select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.version)
        )
    )
    for version in versions:
        users = replace(in_use.users_of(session, version, holders), aliases=[])  # they go with the model
        if users:
            raise _in_use(f"{model.name}:{version.version}", users)
    paths = [version.artifact_path for version in versions]
    try:
        session.execute(delete(ModelAlias).where(ModelAlias.model_id == model.id))
        session.execute(delete(ModelVersion).where(ModelVersion.model_id == model.id))
        session.delete(model)
        session.flush()
    except IntegrityError as exc:  # a deployment of one was committed since the check above
        raise _in_use(public.name, None) from exc
    return public, paths


def _in_use(ref: str, users: in_use.Users | None) -> errors.Conflict:
    """The 409 naming what uses `ref`; without `users`, the deployments' foreign key caught one
    committed between the check and the delete."""
    what = users.describe() if users else "served by a deployment made meanwhile"
    return errors.Conflict(
        f"{ref} is in use: {what}. Move the aliases, withdraw the listings and delete or repoint "
        "the deployments first.",
        param="model",
        code="version_in_use",
    )


def compare(
    session: Session, org_id: str, refs: list[str]
) -> tuple[list[ModelVersionPublic], dict[str, dict[str, Any]]]:
    """The versions side by side: for each metric, its value in each version (by `name:version`)."""
    if not 1 <= len(refs) <= 20:
        raise errors.ValidationFailed("compare takes 1 to 20 model versions", param="refs")
    versions = [version_public(session, *resolve(session, org_id, ref, param="refs")) for ref in refs]
    metrics: dict[str, dict[str, Any]] = {}
    for version in versions:
        for metric, value in version.metrics.items():
            if isinstance(value, int | float | str | None):
                metrics.setdefault(metric, {})[version.ref] = value
    return versions, metrics
