"""Traffic splits: one deployment serving several versions of a model by weight (canaries).

`resolve` checks a requested split against the registry — every version the caller's own, of one
task that the predict route serves, with one input signature, each listed once, weights summing
to 100 — and returns what the deployment stores (`DeploymentConfig.traffic`). Routing a request
is a weighted draw in `ServedModel.pick`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.registry import service as registry
from openmaas.registry.tables import ModelVersion, RegisteredModel
from openmaas.schemas.serving import TrafficSplit
from openmaas.serving.deployment_config import TrafficRoute
from openmaas.serving.runtimes import PREDICT_TASKS


def resolve(session: Session, org_id: str, entries: Sequence[TrafficSplit]) -> tuple[TrafficRoute, ...]:
    """The split as stored (`name:N`, version id, weight per entry), or raise naming the entry at
    fault (`traffic.1.version`)."""
    resolved: list[TrafficRoute] = []
    first: ModelVersion | None = None
    for index, entry in enumerate(entries):
        param = f"traffic.{index}.version"
        try:
            _, version = registry.resolve(session, org_id, entry.version, param=param)
        except errors.NotFound as exc:  # an unknown model name is reported against `model`
            raise errors.NotFound(exc.message, param=param, code=exc.code) from None
        if len(entries) > 1 and version.task not in PREDICT_TASKS:
            raise errors.ValidationFailed(
                f"{entry.version!r} is a {version.task} model; traffic splits apply to models served "
                "by /predict.",
                param=param,
                code="traffic_split_unsupported",
            )
        if first is None:
            first = version
        else:
            _check_compatible(first, version, entry.version, param)
        if any(route.version_id == version.id for route in resolved):
            raise errors.ValidationFailed(
                f"{entry.version!r} is listed twice.", param=param, code="duplicate_version"
            )
        resolved.append(
            TrafficRoute(version=ref(session, version), version_id=version.id, weight=entry.weight)
        )
    total = sum(route.weight for route in resolved)
    if total != 100:
        raise errors.ValidationFailed(
            f"The traffic weights sum to {total}; they must sum to 100.",
            param="traffic",
            code="invalid_traffic",
        )
    return tuple(resolved)


def _check_compatible(first: ModelVersion, version: ModelVersion, asked: str, param: str) -> None:
    if version.task != first.task:
        raise errors.ValidationFailed(
            f"{asked!r} is a {version.task} model; every version of a split must be a {first.task} model.",
            param=param,
            code="incompatible_version",
        )
    if input_signature(version) != input_signature(first):
        raise errors.ValidationFailed(
            f"{asked!r} takes other inputs than the split's first version; a split's versions must "
            "share one input signature.",
            param=param,
            code="incompatible_signature",
        )


def input_signature(version: ModelVersion) -> Any:
    """What a version's predict requests look like (imported text models, GGUF LLMs too, take texts)."""
    manifest = version.manifest or {}
    if "input_signature" in manifest:
        return manifest["input_signature"]
    return {"kind": "text"} if manifest.get("source") in ("huggingface", "gguf") else None


def ref(session: Session, version: ModelVersion) -> str:
    """`name:version` of a registry version."""
    model = session.get(RegisteredModel, version.model_id)
    return f"{model.name}:{version.version}" if model is not None else version.id


def describe(split: Sequence[TrafficRoute]) -> str:
    return ", ".join(f"{route.version} {route.weight}%" for route in split)
