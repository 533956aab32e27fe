"""One deployment's explainer: Captum integrated gradients on its own copy of the model, behind its
own small queue and worker thread.

The queue is a `Batcher` of its own (one worker, one request per run, a few waiting at most; full →
503 with Retry-After, past the deadline → 504), so explanations — each costing `steps` forward and
backward passes — never share, block or slow the prediction batcher. The model copy matters too:
Captum hooks layers while it runs, and the prediction replicas must never see those hooks.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from torch import nn

from openmaas import errors
from openmaas.datasets.preprocessing.tabular import TabularPreprocessor
from openmaas.datasets.preprocessing.text import TextPreprocessor
from openmaas.serving.batcher import Batcher
from openmaas.serving.explain import attribution
from openmaas.serving.explain.options import ExplainLimits, ExplainOptions
from openmaas.serving.signatures import InvalidRow, check_finite
from openmaas.tasks import Task
from openmaas.training.predictor import Predictor

EXPLAINABLE = (
    Task.TABULAR_CLASSIFICATION,
    Task.TABULAR_REGRESSION,
    Task.TEXT_CLASSIFICATION,
    Task.IMAGE_CLASSIFICATION,
    Task.AUDIO_CLASSIFICATION,
)
# Input values per integrated-gradients chunk (rows × steps × row size): bounds the memory it takes.
CHUNK_VALUES = 1 << 22


def unsupported(task: str, why: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(
        f"Explanations are not available for this deployment's {task} model: {why}",
        param="deployment",
        code="explanations_unsupported",
    )


class Explainer:
    def __init__(
        self,
        predictor: Predictor,
        *,
        task: str,
        labels: Sequence[str],
        encode: Callable[[list[Any]], torch.Tensor],
        limits: ExplainLimits,
        name: str,
    ) -> None:
        if task not in EXPLAINABLE:
            why = "recommenders rank items for a user id; there are no input features to attribute."
            raise unsupported(task, why if task == Task.RECOMMENDATION else "it has no attributable inputs.")
        if not any(p.numel() for p in predictor.model.parameters()):
            raise unsupported(
                task, "it runs outside PyTorch (ONNX Runtime or quantized), so it has no gradients."
            )
        embedding = getattr(predictor.model, "embedding", None)
        if task == Task.TEXT_CLASSIFICATION and not isinstance(embedding, nn.Embedding):
            raise unsupported(task, "its token embedding layer cannot be found.")
        self.task = task
        self.labels = list(labels)
        self.limits = limits
        self._predictor = predictor
        self._encode = encode
        self._model: nn.Module | None = None
        self._lock = threading.Lock()
        self.batcher = Batcher(
            self._run,
            replicas=1,
            max_batch_size=1,
            max_wait_ms=0,
            max_queue=limits.max_queue,
            name=f"explain-{name}",
            split=False,  # one request per run, whole: its rows share its options
        )

    @property
    def queued(self) -> int:
        return self.batcher.queued

    def check_rows(self, rows: list[Any]) -> list[Any]:
        return self.limits.check_rows(rows)

    async def explain(
        self, rows: list[Any], options: ExplainOptions, *, timeout_s: float, gone: Callable[[], bool] | None
    ) -> list[dict[str, Any]]:
        try:
            return await self.batcher.call(rows, options, timeout_s=timeout_s, gone=gone)
        except errors.ServiceUnavailable as exc:
            if exc.code != "queue_full":
                raise
            raise errors.ServiceUnavailable(
                "This deployment's explanation queue is full; retry shortly (predictions are not affected).",
                retry_after=exc.retry_after,
                code="queue_full",
            ) from None

    def close(self) -> None:
        self.batcher.close()

    # The worker thread only, below.

    def _run(self, _replica: int, rows: list[Any], options: list[Any]) -> list[dict[str, Any]]:
        return self.explain_rows(rows, options[0])

    def explain_rows(self, rows: list[Any], options: ExplainOptions) -> list[dict[str, Any]]:
        """Predict and explain `rows` (already checked) synchronously; what the worker runs."""
        model = self._model_copy()
        inputs = self._encode(rows)
        with torch.no_grad():
            outputs = model(inputs)
        check_finite(outputs)
        predictions, targets = self._predictions(outputs, options.target)
        explained, deltas = self._attribute(model, inputs, rows, targets, options)
        return [
            {
                "prediction": prediction,
                "target": self._target_name(target),
                **found,
                "convergence_delta": delta,
            }
            for prediction, target, found, delta in zip(predictions, targets, explained, deltas, strict=True)
        ]

    def _model_copy(self) -> nn.Module:
        with self._lock:
            if self._model is None:
                model = copy.deepcopy(self._predictor.model).eval()
                for parameter in model.parameters():
                    parameter.requires_grad_(False)
                self._model = model
            return self._model

    def _predictions(
        self, outputs: torch.Tensor, target: str | None
    ) -> tuple[list[dict[str, Any]], list[int]]:
        if self.task == Task.TABULAR_REGRESSION:
            return [{"value": value} for value in outputs.squeeze(-1).tolist()], [0] * len(outputs)
        probabilities = torch.softmax(outputs, dim=1)
        best = probabilities.argmax(dim=1).tolist()
        predictions = [
            {"label": self.labels[index], "probabilities": dict(zip(self.labels, row, strict=True))}
            for index, row in zip(best, probabilities.tolist(), strict=True)
        ]
        targets = best if target is None else [self.labels.index(target)] * len(best)
        return predictions, targets

    def _target_name(self, target: int) -> str | None:
        return None if self.task == Task.TABULAR_REGRESSION else self.labels[target]

    def _forward(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """What is explained: the target class's probability, or the regression value."""
        if self.task == Task.TABULAR_REGRESSION:
            return lambda x: model(x)
        return lambda x: torch.softmax(model(x), dim=1)

    def _attribute(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        rows: list[Any],
        targets: list[int],
        options: ExplainOptions,
    ) -> tuple[list[dict[str, Any]], list[float]]:
        forward = self._forward(model)
        chunk_steps = max(1, CHUNK_VALUES // max(1, inputs[0].numel() * len(rows)))
        settings = {
            "target": targets,
            "n_steps": options.steps,
            "internal_batch_size": len(rows) * min(options.steps, chunk_steps),
            "return_convergence_delta": True,
        }
        preprocessor = self._predictor.preprocessor
        if self.task == Task.TEXT_CLASSIFICATION:
            assert isinstance(preprocessor, TextPreprocessor)
            layer = LayerIntegratedGradients(forward, model.embedding)
            baseline = torch.full_like(inputs, preprocessor.pad_id)
            found, delta = layer.attribute(inputs, baselines=baseline, **settings)
            _check_attributions(found, delta)
            tokens = [e.tokens[: preprocessor.max_length] for e in preprocessor.tokenizer.encode_batch(rows)]
            return [{"attributions": t} for t in attribution.per_token(found, tokens)], delta.tolist()
        baseline = self._baseline(inputs, options.baseline)
        found, delta = IntegratedGradients(forward).attribute(inputs, baselines=baseline, **settings)
        _check_attributions(found, delta)
        if isinstance(preprocessor, TabularPreprocessor):
            widths = attribution.feature_widths(preprocessor)
            return [{"attributions": s} for s in attribution.per_feature(found, widths)], delta.tolist()
        if self.task == Task.IMAGE_CLASSIFICATION:
            return [{"attributions": attribution.image_explanation(a)} for a in found], delta.tolist()
        return [{"attributions": attribution.spectrogram_explanation(a)} for a in found], delta.tolist()

    def _baseline(self, inputs: torch.Tensor, chosen: Any) -> torch.Tensor:
        """The reference input: a black image for images; otherwise by default all zeros in the
        model's (normalised) input space — the training mean of scaled numbers with no category
        set, the training clips' average log-mel value per bin."""
        if chosen is None and self.task != Task.IMAGE_CLASSIFICATION:
            return torch.zeros_like(inputs)
        if self.task == Task.IMAGE_CLASSIFICATION:
            chosen = 0.0 if chosen is None else chosen  # black, unless the request says otherwise
            preprocessor: Any = self._predictor.preprocessor
            pixel = (chosen - preprocessor.mean.view(1, -1, 1, 1)) / preprocessor.std.view(1, -1, 1, 1)
            return pixel.to(inputs.dtype).expand_as(inputs).contiguous()
        try:
            encoded = self._encode([chosen])
        except InvalidRow as exc:  # the baseline row, not a row of `inputs`
            param = "baseline" + (f".{exc.field}" if exc.field is not None else "")
            raise errors.ValidationFailed(f"{param}: {exc.detail}", param=param, code=exc.code) from None
        return encoded.to(inputs.dtype).expand_as(inputs).contiguous()


def _check_attributions(found: torch.Tensor, delta: torch.Tensor) -> None:
    """Attributions and convergence deltas hold no NaN or infinity: else `non_finite_output`
    naming the first row that does (an explanation of nulls is none)."""
    check_finite(
        torch.cat([found.detach().reshape(len(found), -1), delta.detach().reshape(len(found), -1)], 1)
    )
