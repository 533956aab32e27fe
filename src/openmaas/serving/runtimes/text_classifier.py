"""The runtime for imported Hugging Face BERT sequence classifiers (`BertForSequenceClassification`
folders): our BERT encoder plus its pooler and classifier head, behind the dynamic batcher.

It answers `/predict` like a trained text model — `{"inputs": ["some text", ...]}` → a label and
class probabilities, labels named by the folder's `id2label` — so it is a `PredictorRuntime` with
its own loading and batch function. Replicas share one read-only model: inference does not write
to it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
from tokenizers import Tokenizer

from openmaas.errors import InvalidRequest
from openmaas.serving.batcher import Batcher
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.serving.encoders.bert import BertEncoder, load_bert
from openmaas.serving.runtimes.predictor import PredictorRuntime, _torch_threads
from openmaas.serving.signatures import TextCheck, check_finite
from openmaas.tasks import Task


def is_hf_classifier(folder: Path) -> bool:
    """An imported Hugging Face folder (config + tokenizer + safetensors), not our own artifact."""
    return all((folder / name).is_file() for name in ("config.json", "tokenizer.json", "model.safetensors"))


class TextClassifierRuntime(PredictorRuntime):
    def __init__(self, folder: Path, config: RuntimeConfig) -> None:
        self.task = Task.TEXT_CLASSIFICATION.value
        self.version = config.model_version
        self.signature = {"kind": "text"}
        self.model: BertEncoder = load_bert(folder)
        id2label = self.model.config.id2label or {}
        if not id2label:
            raise ValueError("config.json names no labels (id2label) for the classifier head")
        self.labels = [id2label[i] for i in sorted(id2label)]
        self.item_count = 0
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(_max_length(folder, self.model.config.max_position_embeddings))
        self.tokenizer.no_padding()
        replicas = max(1, config.replicas)
        torch.set_num_threads(_torch_threads(config, replicas))
        self.max_batch_size = config.max_batch_size
        self.check_inputs = TextCheck()
        self.batcher = Batcher(
            self._run_batch,
            replicas=replicas,
            max_batch_size=self.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue,
            name=f"text-classifier-{folder.name}",
        )

    def explainer(self, limits: Any) -> NoReturn:
        raise InvalidRequest(
            f"{self.version or 'this model'} is an imported classifier; explanations cover models "
            "trained on the platform.",
            param="deployment",
            code="explanations_unsupported",
        )

    def close(self) -> None:
        self.batcher.close()

    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """Class probabilities, (len(texts), classes): one padded forward pass."""
        encodings = self.tokenizer.encode_batch(texts)
        longest = max(len(e.ids) for e in encodings)
        input_ids = torch.zeros(len(texts), longest, dtype=torch.long)
        mask = torch.zeros(len(texts), longest, dtype=torch.long)
        for i, encoding in enumerate(encodings):
            input_ids[i, : len(encoding.ids)] = torch.tensor(encoding.ids)
            mask[i, : len(encoding.ids)] = 1
        with torch.inference_mode():
            logits = self.model.classify(self.model(input_ids, mask))
        return torch.softmax(logits.float(), dim=-1)

    def _run_batch(self, replica: int, rows: list[Any], top_ks: list[Any]) -> Sequence[Any]:
        probabilities = self.probabilities(rows)
        check_finite(probabilities)
        return self._classes(probabilities.tolist(), probabilities.argmax(dim=1).tolist(), top_ks)


def _max_length(folder: Path, positions: int) -> int:
    """The tokenizer's own limit when it names one, never past the model's positions."""
    path = folder / "tokenizer_config.json"
    limit = positions
    if path.is_file():
        configured = json.loads(path.read_text()).get("model_max_length")
        if isinstance(configured, int) and configured > 0:
            limit = min(limit, configured)
    return limit
