"""The sentence-embedding runtime: our BERT encoder, run off the event loop one batch at a time,
behind a bounded queue."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from openmaas import errors
from openmaas.serving.encoders.sentence import Embeddings, SentenceEncoder


class EmbeddingRuntime:
    task = "sentence-embedding"

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.encoder = SentenceEncoder(folder)
        self.max_waiting = int(config.get("max_waiting_requests", 64))
        self.max_inputs = int(config.get("max_batch_size", 2048))
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
                return await run_in_threadpool(self.encoder.embed, texts)
        finally:
            with self._count_lock:
                self._waiting -= 1

    def close(self) -> None:
        pass
