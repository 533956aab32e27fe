"""SDK resource for deployments: `client.deployments.create("churn@production")`, `wait_ready`,
`predict`, `explain`, traffic splits and canaries."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from openmaas.schemas.explain import ExplanationsPublic
from openmaas.schemas.pages import Page
from openmaas.schemas.serving import DeploymentEventPublic, DeploymentPublic, PredictionsPublic
from openmaas.sdk.calls import Call, Plan, Sleep, creating
from openmaas.sdk.resource import Resource, S, endpoint


def _get(name: str) -> Call[DeploymentPublic]:
    return Call("GET", f"/v1/deployments/{name}", DeploymentPublic)


def _update(name: str, changes: dict[str, Any]) -> Call[DeploymentPublic]:
    return Call("PATCH", f"/v1/deployments/{name}", DeploymentPublic, changes)


def _traffic(weights: Mapping[str, int]) -> dict[str, Any]:
    return {"traffic": [{"version": version, "weight": weight} for version, weight in weights.items()]}


def _canary(current: DeploymentPublic, model: str, percent: int) -> dict[str, int]:
    """The split that sends `percent` of requests to `model` and the rest to what serves most now."""
    stable = max(current.traffic, key=lambda t: t.weight).version if current.traffic else current.model
    return {stable: 100 - percent, model: percent} if percent < 100 else {model: 100}


def _given(**options: Any) -> dict[str, Any]:
    return {key: value for key, value in options.items() if value is not None}


class Deployments(Resource[S]):
    @endpoint
    def create(
        self,
        model: str,
        *,
        name: str | None = None,
        replicas: int = 1,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Call[DeploymentPublic]:
        """Deploy `model` (`name`, `name:3`, `name@alias`); options: max_batch_size, max_wait_ms,
        max_queue, engine, min_replicas (0: scale to zero), idle_timeout_s."""
        deployment = {"model": model, "replicas": replicas, **({"name": name} if name else {}), **options}
        return creating("/v1/deployments", DeploymentPublic, deployment, idempotency_key)

    @endpoint
    def list(self, *, limit: int | None = None, after: str | None = None) -> Call[Page[DeploymentPublic]]:
        return Call("GET", "/v1/deployments", Page[DeploymentPublic], params={"limit": limit, "after": after})

    @endpoint
    def get(self, name: str) -> Call[DeploymentPublic]:
        return _get(name)

    @endpoint
    def events(
        self, name: str, *, limit: int | None = None, after: str | None = None
    ) -> Call[Page[DeploymentEventPublic]]:
        params = {"limit": limit, "after": after}
        return Call("GET", f"/v1/deployments/{name}/events", Page[DeploymentEventPublic], params=params)

    @endpoint
    def update(self, name: str, *, model: str | None = None, **options: Any) -> Call[DeploymentPublic]:
        """Serve another version (`model="churn:4"`) or settings; the rolling update fails no request
        (`strategy="recreate"` stops the old version first, when both do not fit in memory)."""
        return _update(name, {**({"model": model} if model else {}), **options})

    @endpoint
    def traffic(self, name: str, weights: Mapping[str, int]) -> Call[DeploymentPublic]:
        """Split requests between versions by percent (`{"churn:3": 90, "churn:4": 10}`);
        one version at 100 promotes or rolls back."""
        return _update(name, _traffic(weights))

    @endpoint
    def canary(self, name: str, model: str, percent: int) -> Plan[DeploymentPublic]:
        """Send `percent` of the deployment's requests to `model`, the rest to its main version."""
        current = yield from _get(name)
        return (yield from _update(name, _traffic(_canary(current, model, percent))))

    @endpoint
    def predict(
        self, name: str, inputs: Sequence[Any], *, top_k: int | None = None, timeout: float | None = None
    ) -> Call[PredictionsPublic]:
        """Predictions for `inputs` in the model's signature (feature rows, base64 files, texts, user ids)."""
        request = {"inputs": [*inputs], **_given(top_k=top_k, timeout=timeout)}
        return Call("POST", f"/v1/deployments/{name}/predict", PredictionsPublic, request)

    @endpoint
    def explain(
        self,
        name: str,
        inputs: Sequence[Any],
        *,
        target: str | None = None,
        steps: int | None = None,
        baseline: Any = None,
        timeout: float | None = None,
    ) -> Call[ExplanationsPublic]:
        """Feature attributions (integrated gradients) for `inputs`, explaining `target` (a class
        label; default: each row's predicted class) against `baseline` in `steps` steps."""
        options = _given(target=target, steps=steps, baseline=baseline, timeout=timeout)
        return Call(
            "POST", f"/v1/deployments/{name}/explain", ExplanationsPublic, {"inputs": [*inputs], **options}
        )

    @endpoint
    def stop(self, name: str) -> Call[DeploymentPublic]:
        return Call("POST", f"/v1/deployments/{name}/stop", DeploymentPublic)

    @endpoint
    def delete(self, name: str) -> Call[DeploymentPublic]:
        return Call("DELETE", f"/v1/deployments/{name}", DeploymentPublic)

    @endpoint
    def wait_ready(self, name: str, timeout: float = 300.0, interval: float = 0.25) -> Plan[DeploymentPublic]:
        """Poll until the deployment is ready; raise RuntimeError if it fails, stops or times out."""
        deadline = time.monotonic() + timeout
        while (deployment := (yield from _get(name))).state != "ready":
            if deployment.state in ("failed", "stopped") or time.monotonic() > deadline:
                raise RuntimeError(
                    f"deployment {name!r} is {deployment.state}: {deployment.error or 'timed out'}"
                )
            yield Sleep(interval)
        return deployment
