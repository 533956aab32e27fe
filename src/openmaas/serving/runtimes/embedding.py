"""The sentence-embedding runtime: our BERT encoder, run off the event loop one batch at a time,
behind a bounded queue."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from anyio import to_thread

from openmaas import errors
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.serving.encoders.sentence import Embeddings, SentenceEncoder
from openmaas.tasks import SENTENCE_EMBEDDING

DEFAULT_MAX_WAITING = 64


class EmbeddingRuntime:
    task = SENTENCE_EMBEDDING

    def __init__(self, folder: Path, config: RuntimeConfig) -> None:
        self.encoder = SentenceEncoder(folder)
        waiting = config.engine.max_waiting_requests
        self.max_waiting = DEFAULT_MAX_WAITING if waiting is None else waiting
        self.max_inputs = config.max_batch_size
        self._waiting = 0
        self._count_lock = threading.Lock()
        self._model_lock = asyncio.Lock()

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    async def embed(self, texts: list[str]) -> Embeddings:
        with self._count_lock:
            if self._waiting >= self.max_waiting:
                raise errors.ServiceUnavailable(
                    "This embedding model is at capacity; retry shortly.", retry_after=1
                )
            self._waiting += 1
        try:
            async with self._model_lock:  # one forward pass at a time: torch already uses every core
                return await to_thread.run_sync(self.encoder.embed, texts)
        finally:
            with self._count_lock:
                self._waiting -= 1

    def close(self) -> None:
        pass
