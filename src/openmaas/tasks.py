"""The tasks a model version serves: the vocabulary that registry, training, optimize and serving
share, one name each.

`Task` is what the platform trains; the other three come only with imported models.
"""

from __future__ import annotations

import enum


class Task(enum.StrEnum):
    """The task families trained on the platform."""

    TABULAR_CLASSIFICATION = "tabular-classification"
    TABULAR_REGRESSION = "tabular-regression"
    IMAGE_CLASSIFICATION = "image-classification"
    TEXT_CLASSIFICATION = "text-classification"
    AUDIO_CLASSIFICATION = "audio-classification"
    RECOMMENDATION = "recommendation"


TRAINED_TASKS = frozenset(Task)
# Imported Llama/Qwen2 folders, served by the LLM engine behind the OpenAI routes.
TEXT_GENERATION = "text-generation"
# Imported sentence-transformers folders, served by `/v1/embeddings`.
SENTENCE_EMBEDDING = "sentence-embedding"
# Imported ONNX files without preprocessing: raw tensors in, raw tensors out.
TENSOR_INFERENCE = "tensor-inference"
