"""SDK resources for deployments, sync and async: `client.deployments.create("churn@production")`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from openmaas.schemas.explain import ExplanationsPublic
from openmaas.schemas.pages import Page
from openmaas.schemas.serving import DeploymentEventPublic, DeploymentPublic, PredictionsPublic
from openmaas.sdk import calls

if TYPE_CHECKING:
    from openmaas.sdk.async_client import AsyncClient
    from openmaas.sdk.client import Client


def _body(model: str, name: str | None, replicas: int, options: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "replicas": replicas, **({"name": name} if name else {}), **options}


def _traffic(weights: Mapping[str, int]) -> dict[str, Any]:
    return {"traffic": [{"version": version, "weight": weight} for version, weight in weights.items()]}


def _explain(
    name: str,
    inputs: Sequence[Any],
    target: str | None,
    steps: int | None,
    baseline: Any,
    timeout: float | None,
) -> calls.Call[ExplanationsPublic]:
    options = {"target": target, "steps": steps, "baseline": baseline, "timeout": timeout}
    body = {"inputs": [*inputs], **{k: v for k, v in options.items() if v is not None}}
    return calls.Call("POST", f"/v1/deployments/{name}/explain", ExplanationsPublic, body)


def _canary(current: DeploymentPublic, model: str, percent: int) -> dict[str, int]:
    """The split that sends `percent` of requests to `model` and the rest to what serves most now."""
    stable = max(current.traffic, key=lambda t: t.weight).version if current.traffic else current.model
    return {stable: 100 - percent, model: percent} if percent < 100 else {model: 100}


class Deployments:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        model: str,
        *,
        name: str | None = None,
        replicas: int = 1,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> DeploymentPublic:
        """Deploy `model` (`name`, `name:3`, `name@alias`); options: max_batch_size, max_wait_ms,
        max_queue, engine, min_replicas (0: scale to zero), idle_timeout_s."""
        body = _body(model, name, replicas, options)
        return self._client.send(calls.create_deployment(body, idempotency_key))

    def list(self, *, limit: int | None = None, after: str | None = None) -> Page[DeploymentPublic]:
        return self._client.send(calls.list_deployments(limit, after))

    def get(self, name: str) -> DeploymentPublic:
        return self._client.send(calls.get_deployment(name))

    def events(
        self, name: str, *, limit: int | None = None, after: str | None = None
    ) -> Page[DeploymentEventPublic]:
        return self._client.send(calls.deployment_events(name, limit, after))

    def update(self, name: str, *, model: str | None = None, **options: Any) -> DeploymentPublic:
        """Serve another version (`model="churn:4"`) or settings; the swap fails no request."""
        body = {**({"model": model} if model else {}), **options}
        return self._client.send(calls.update_deployment(name, body))

    def traffic(self, name: str, weights: Mapping[str, int]) -> DeploymentPublic:
        """Split requests between versions by percent (`{"churn:3": 90, "churn:4": 10}`);
        one version at 100 promotes or rolls back."""
        return self._client.send(calls.update_deployment(name, _traffic(weights)))

    def canary(self, name: str, model: str, percent: int) -> DeploymentPublic:
        """Send `percent` of the deployment's requests to `model`, the rest to its main version."""
        return self.traffic(name, _canary(self.get(name), model, percent))

    def predict(
        self, name: str, inputs: Sequence[Any], *, top_k: int | None = None, timeout: float | None = None
    ) -> PredictionsPublic:
        """Predictions for `inputs` in the model's signature (feature rows, base64 files, texts, user ids)."""
        return self._client.send(calls.predict(name, [*inputs], top_k, timeout))

    def explain(
        self,
        name: str,
        inputs: Sequence[Any],
        *,
        target: str | None = None,
        steps: int | None = None,
        baseline: Any = None,
        timeout: float | None = None,
    ) -> ExplanationsPublic:
        """Feature attributions (integrated gradients) for `inputs`, explaining `target` (a class
        label; default: each row's predicted class) against `baseline` in `steps` steps."""
        return self._client.send(_explain(name, inputs, target, steps, baseline, timeout))

    def stop(self, name: str) -> DeploymentPublic:
        return self._client.send(calls.stop_deployment(name))

    def delete(self, name: str) -> DeploymentPublic:
        return self._client.send(calls.delete_deployment(name))

    def wait_ready(self, name: str, timeout: float = 300.0, interval: float = 0.25) -> DeploymentPublic:
        """Poll until the deployment is ready; raise RuntimeError if it fails, stops or times out."""
        deadline = time.monotonic() + timeout
        while True:
            deployment = self.get(name)
            if deployment.state == "ready":
                return deployment
            if deployment.state in ("failed", "stopped") or time.monotonic() > deadline:
                raise RuntimeError(
                    f"deployment {name!r} is {deployment.state}: {deployment.error or 'timed out'}"
                )
            time.sleep(interval)


class AsyncDeployments:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        model: str,
        *,
        name: str | None = None,
        replicas: int = 1,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> DeploymentPublic:
        body = _body(model, name, replicas, options)
        return await self._client.send(calls.create_deployment(body, idempotency_key))

    async def list(self, *, limit: int | None = None, after: str | None = None) -> Page[DeploymentPublic]:
        return await self._client.send(calls.list_deployments(limit, after))

    async def get(self, name: str) -> DeploymentPublic:
        return await self._client.send(calls.get_deployment(name))

    async def update(self, name: str, *, model: str | None = None, **options: Any) -> DeploymentPublic:
        body = {**({"model": model} if model else {}), **options}
        return await self._client.send(calls.update_deployment(name, body))

    async def traffic(self, name: str, weights: Mapping[str, int]) -> DeploymentPublic:
        return await self._client.send(calls.update_deployment(name, _traffic(weights)))

    async def canary(self, name: str, model: str, percent: int) -> DeploymentPublic:
        return await self.traffic(name, _canary(await self.get(name), model, percent))

    async def predict(
        self, name: str, inputs: Sequence[Any], *, top_k: int | None = None, timeout: float | None = None
    ) -> PredictionsPublic:
        return await self._client.send(calls.predict(name, [*inputs], top_k, timeout))

    async def explain(
        self,
        name: str,
        inputs: Sequence[Any],
        *,
        target: str | None = None,
        steps: int | None = None,
        baseline: Any = None,
        timeout: float | None = None,
    ) -> ExplanationsPublic:
        return await self._client.send(_explain(name, inputs, target, steps, baseline, timeout))

    async def stop(self, name: str) -> DeploymentPublic:
        return await self._client.send(calls.stop_deployment(name))

    async def delete(self, name: str) -> DeploymentPublic:
        return await self._client.send(calls.delete_deployment(name))
