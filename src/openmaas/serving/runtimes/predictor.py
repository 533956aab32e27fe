"""The runtime for models trained on the platform: the artifact's Predictor behind a dynamic batcher.

`check` validates a request's inputs against the model's signature on the event loop; `predict`
queues them on the batcher, whose replica threads (one model copy each) run the fitted
preprocessing and the model on merged batches, and returns one JSON-ready prediction per input.
Tabular models skip pandas on this path (see `TabularEncoder`); other families use the artifact's
own preprocessor.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from openmaas.datasets.preprocessing.tabular import TabularPreprocessor
from openmaas.errors import ValidationFailed
from openmaas.registry.manifest import read_manifest
from openmaas.serving.batcher import Batcher, BatchStats
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.serving.explain.explainer import Explainer
from openmaas.serving.explain.options import ExplainLimits
from openmaas.serving.signatures import InputCheck, InvalidRow, check_finite, input_check
from openmaas.serving.tabular_encoder import TabularEncoder
from openmaas.tasks import Task
from openmaas.training.artifact import load_artifact
from openmaas.training.predictor import Predictor

_MEDIA = {"image": "image", "audio": "WAV audio"}


def _torch_threads(config: RuntimeConfig, replicas: int) -> int:
    """Intra-op threads per model call: the cores this process may use, shared by its replicas."""
    if config.engine.num_threads:
        return max(1, config.engine.num_threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, replicas))


class PredictInputs:
    """A /predict request checked against the model's signature, on the event loop: shared by this
    runtime and the one whose replicas are Ray actors (`serving/ray_replicas.py`)."""

    task: str
    signature: dict[str, Any]
    labels: list[str]
    item_count: int
    check_inputs: InputCheck

    def check(self, inputs: Any, top_k: Any) -> tuple[list[Any], int | None]:
        """Validate a request (raises ValidationFailed naming the row and field). Any number of
        rows: the batcher runs more than `max_batch_size` in slices."""
        if type(inputs) is not list or not inputs:
            raise ValidationFailed("inputs must be a non-empty array.", param="inputs")
        if top_k is not None:
            top_k = self._check_top_k(top_k)
        return self.check_inputs.check(inputs), top_k

    def _check_top_k(self, top_k: Any) -> int:
        limit = self.item_count if self.task == Task.RECOMMENDATION else len(self.labels)
        if self.task == Task.TABULAR_REGRESSION:
            raise ValidationFailed("top_k does not apply to regression models.", param="top_k")
        if type(top_k) is not int or not 1 <= top_k <= limit:
            raise ValidationFailed(f"top_k must be an integer from 1 to {limit}.", param="top_k")
        return top_k


class PredictorRuntime(PredictInputs):
    # Requests awaiting an answer; the replica manager unloads only runtimes with none.
    in_flight: int = 0

    def __init__(self, folder: Path, config: RuntimeConfig) -> None:
        manifest = read_manifest(folder)
        self.task: str = manifest["task"]
        self.version: str = config.model_version
        self.signature: dict[str, Any] = manifest["input_signature"]
        self.labels: list[str] = list(manifest.get("labels") or [])
        replicas = max(1, config.replicas)
        threads = _torch_threads(config, replicas)
        torch.set_num_threads(threads)
        self.predictors: list[Predictor] = [self._load_predictor(folder, threads) for _ in range(replicas)]
        first = self.predictors[0]
        self.max_batch_size = config.max_batch_size
        self.check_inputs: InputCheck = input_check(self.signature)
        self._encoder = (
            TabularEncoder(first.preprocessor)
            if isinstance(first.preprocessor, TabularPreprocessor)
            else None
        )
        self.item_count = len(getattr(first.preprocessor, "items", ()))
        self.batcher = Batcher(
            self._run_batch,
            replicas=replicas,
            max_batch_size=self.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue,
            name=f"predict-{folder.name}",
        )
        self._name = folder.name
        self._explainer: Explainer | None = None

    def _load_predictor(self, folder: Path, threads: int) -> Predictor:
        """One replica's model; runtimes of other model formats (ONNX) override this."""
        return load_artifact(folder)

    @property
    def stats(self) -> BatchStats:
        return self.batcher.stats

    async def predict(
        self,
        rows: list[Any],
        top_k: int | None,
        *,
        timeout_s: float,
        gone: Callable[[], bool] | None = None,
    ) -> list[Any]:
        self.in_flight += 1  # on the event loop only: no lock
        try:
            return await self.batcher.call(rows, top_k, timeout_s=timeout_s, gone=gone)
        finally:
            self.in_flight -= 1

    def explainer(self, limits: ExplainLimits) -> Explainer:
        """The deployment's explainer (own model copy, own small queue), made on first use;
        raises InvalidRequest `explanations_unsupported` for models it cannot explain."""
        if self._explainer is None:
            self._explainer = Explainer(
                self.predictors[0],
                task=self.task,
                labels=self.labels,
                encode=lambda rows: self._encode(self.predictors[0], rows),
                limits=limits,
                name=self._name,
            )
        return self._explainer

    def close(self) -> None:
        self.batcher.close()
        if self._explainer is not None:
            self._explainer.close()

    # Replica threads only, below.

    def _run_batch(self, replica: int, rows: list[Any], top_ks: list[Any]) -> Sequence[Any]:
        predictor = self.predictors[replica]
        if self.task == Task.RECOMMENDATION:
            k = max((k or predictor.default_k) for k in top_ks)
            k = min(k, self.item_count)
            found = predictor.predict(rows, k=k)
            return [
                _recommended(r.to_dict(), top_k or predictor.default_k)
                for r, top_k in zip(found, top_ks, strict=True)
            ]
        with torch.inference_mode():
            inputs = self._encode(predictor, rows)
            outputs = predictor.model(inputs)
        check_finite(outputs)
        if self.task == Task.TABULAR_REGRESSION:
            return [{"value": value} for value in outputs.squeeze(-1).tolist()]
        probabilities = torch.softmax(outputs, dim=1)
        return self._classes(probabilities.tolist(), probabilities.argmax(dim=1).tolist(), top_ks)

    def _encode(self, predictor: Predictor, rows: list[Any]) -> torch.Tensor:
        if self._encoder is not None:
            return self._encoder.encode(rows)
        try:
            return predictor.preprocessor.transform(rows)
        except Exception:
            if self.signature["kind"] not in _MEDIA:
                raise
            self._locate_undecodable(predictor, rows)
            raise

    def _locate_undecodable(self, predictor: Predictor, rows: list[Any]) -> None:
        what = _MEDIA[self.signature["kind"]]
        for index, row in enumerate(rows):
            try:
                predictor.preprocessor.transform([row])
            except Exception as exc:
                detail = getattr(exc, "message", None) or str(exc)
                raise InvalidRow(
                    index, f"is not a decodable {what}: {detail}", code="undecodable_input"
                ) from exc

    def _classes(
        self, probabilities: list[list[float]], bests: list[int], top_ks: list[Any]
    ) -> list[dict[str, Any]]:
        labels = self.labels
        results = []
        for row, best, top_k in zip(probabilities, bests, top_ks, strict=True):
            if top_k is None:
                shown = dict(zip(labels, row, strict=True))
            else:
                order = sorted(range(len(row)), key=row.__getitem__, reverse=True)[:top_k]
                shown = {labels[i]: row[i] for i in order}
            results.append({"label": labels[best], "probabilities": shown})
        return results


def _recommended(found: dict[str, Any], top_k: int) -> dict[str, Any]:
    found["items"] = found["items"][:top_k]
    found["scores"] = found["scores"][:top_k]
    return found
