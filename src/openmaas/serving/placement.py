"""Where a deployment's replicas run: `local` (threads of this API server, the default) or `ray`
(one Ray actor per replica on the cluster, `serving/ray_pool.py`).

Checks a create's placement settings and whether this server can place on Ray at all; never
imports Ray itself (a server without the `cluster` extra must start and serve as before).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from openmaas import errors


def placement_settings(
    task: str, placement: str, cpus: float | None, gpus: float | None, device: str | None = None
) -> dict[str, Any]:
    """The `DeploymentConfig` fields a create's placement gives (none for the default `local`, so
    the stored config of a local deployment keeps its shape). Every deployable task may go to Ray:
    /predict models (serving/ray_replicas.py), LLMs (ray_llm.py) and embeddings (ray_embeddings.py).
    `device` is an LLM's engine setting: a replica on a GPU must reserve one."""
    if placement != "ray":
        given = "cpus" if cpus is not None else "gpus" if gpus is not None else None
        if given is not None:
            raise errors.ValidationFailed(
                f'{given} applies to Ray replicas only: give "placement": "ray" with it.', param=given
            )
        return {}
    if device is not None and device.startswith("cuda") and not gpus:
        raise errors.ValidationFailed(
            f'engine device {device!r} on Ray replicas needs a GPU reserved for each: give "gpus" '
            "(e.g. 1), or leave the device out.",
            param="gpus",
        )
    settings: dict[str, Any] = {"placement": "ray"}
    if cpus is not None:
        settings["cpus"] = float(cpus)
    if gpus is not None:
        settings["gpus"] = float(gpus)
    return settings


def require_ray(ray_address: str | None) -> None:
    """422 naming `placement` when this server cannot reach a Ray cluster."""
    if importlib.util.find_spec("ray") is None:
        raise errors.ValidationFailed(
            '"placement": "ray" needs Ray on the API server: install the cluster extra '
            "(pip install 'openmaas[cluster]'), set OPENMAAS_RAY_ADDRESS to the cluster's address and "
            'restart the server, or deploy with "placement": "local".',
            param="placement",
            code="ray_unavailable",
        )
    if not ray_address:
        raise errors.ValidationFailed(
            '"placement": "ray" needs a Ray cluster, and this server has none: set OPENMAAS_RAY_ADDRESS '
            '(e.g. 10.0.0.5:6379) on every API server and restart, or deploy with "placement": "local".',
            param="placement",
            code="ray_unavailable",
        )
