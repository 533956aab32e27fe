"""Runtimes: a loaded model ready to answer, one kind per task. A deployment's replica holds one.

Every runtime has `task` and `close()`; each kind adds the calls its routes make.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from openmaas import errors
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.tasks import SENTENCE_EMBEDDING, TENSOR_INFERENCE, TEXT_GENERATION, TRAINED_TASKS, Task

ONNX_FILE = "model.onnx"
# Tasks answered by `/predict` (a PredictorRuntime): splittable between versions, explainable,
# and able to scale to zero.
PREDICT_TASKS = frozenset({TENSOR_INFERENCE, *TRAINED_TASKS})


class Runtime(Protocol):
    task: str

    def close(self) -> None: ...


def deployable_tasks() -> frozenset[str]:
    return frozenset({TEXT_GENERATION, SENTENCE_EMBEDDING, TENSOR_INFERENCE, *TRAINED_TASKS})


def load_runtime(task: str, folder: Path, config: RuntimeConfig) -> Runtime:
    """Build the runtime for an artifact folder. Slow (it loads weights): call it off the event loop."""
    if task == TEXT_GENERATION:
        from openmaas.serving.runtimes.llm import LLMRuntime

        return LLMRuntime(folder, config)
    if task == SENTENCE_EMBEDDING:
        from openmaas.serving.runtimes.embedding import EmbeddingRuntime

        return EmbeddingRuntime(folder, config)
    if task == TENSOR_INFERENCE or (task in TRAINED_TASKS and (folder / ONNX_FILE).is_file()):
        from openmaas.serving.runtimes.onnx import load_onnx_runtime

        return load_onnx_runtime(task, folder, config)
    if task == Task.TEXT_CLASSIFICATION and not (folder / "manifest.json").is_file():
        from openmaas.serving.runtimes.text_classifier import TextClassifierRuntime, is_hf_classifier

        if is_hf_classifier(folder):  # an imported Hugging Face BertForSequenceClassification
            return TextClassifierRuntime(folder, config)
    if task in TRAINED_TASKS:
        from openmaas.serving.runtimes.predictor import PredictorRuntime

        return PredictorRuntime(folder, config)
    raise errors.ValidationFailed(
        f"Models of task {task!r} cannot be deployed by this server; "
        f"deployable: {sorted(deployable_tasks())}.",
        param="model",
        code="task_not_deployable",
    )
