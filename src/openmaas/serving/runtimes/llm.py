"""The text-generation runtime: our LLM engine behind its asyncio front, with the model's
tokenizer and chat template.

A runtime being replaced (a rolling update) stops admitting first — a request that chose it just
before the switch is refused with `ReplicaClosed` and asked again of the new one — and is closed
once its running requests have finished (`running` reaches 0).
"""

from __future__ import annotations

import threading
from pathlib import Path

from openmaas.engine.async_engine import AsyncLLMEngine, RequestStream
from openmaas.engine.llm_engine import LLMEngine
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.tokenizer import Tokenizer
from openmaas.serving.batcher import ReplicaClosed
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.tasks import TEXT_GENERATION


class LLMRuntime:
    task = TEXT_GENERATION

    def __init__(self, folder: Path, config: RuntimeConfig) -> None:
        self.engine = AsyncLLMEngine(LLMEngine.from_pretrained(folder, **config.engine.options()))
        tokenizer = self.engine.tokenizer
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError("the model folder has no tokenizer.json")
        self.tokenizer: Tokenizer = tokenizer
        self.max_model_len: int = self.engine.engine.max_model_len
        # Held while admitting, so that once `stop_admitting` returns no request can still start.
        self._admitting = threading.Lock()
        self._closed = False

    def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str) -> RequestStream:
        with self._admitting:
            if self._closed:
                raise ReplicaClosed("this model version is being replaced; retry", retry_after=1)
            return self.engine.generate(prompt_ids, params, request_id)

    def stop_admitting(self) -> None:
        with self._admitting:
            self._closed = True

    @property
    def running(self) -> int:
        """Requests admitted and not finished (what a replaced runtime waits for before closing)."""
        return self.engine.num_active

    def close(self) -> None:
        self.stop_admitting()
        self.engine.shutdown()
