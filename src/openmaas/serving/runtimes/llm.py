"""The text-generation runtime: our LLM engine behind its asyncio front, with the model's
tokenizer and chat template.

A runtime being replaced (a rolling update) stops admitting first — a request that chose it just
before the switch is refused with `ReplicaClosed` and asked again of the new one — and is closed
once its running requests have finished (`running` reaches 0).

`with_adapter` gives a view of the runtime that runs every request on one LoRA adapter (an `ft:`
model, serving/adapters.py): same engine, tokenizer and admission state, so a replaced runtime stops
its adapters' requests too.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

from openmaas.engine.async_engine import AsyncLLMEngine, RequestStream
from openmaas.engine.llm_engine import LLMEngine
from openmaas.engine.lora import LoraRequest
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.tokenizer import Tokenizer
from openmaas.serving.batcher import ReplicaClosed
from openmaas.serving.deployment_config import RuntimeConfig
from openmaas.tasks import TEXT_GENERATION


class LLMRuntime:
    task = TEXT_GENERATION
    lora: LoraRequest | None = None  # set on a `with_adapter` view

    def __init__(self, folder: Path, config: RuntimeConfig) -> None:
        self.engine = AsyncLLMEngine(LLMEngine.from_pretrained(folder, **config.engine.options()))
        tokenizer = self.engine.tokenizer
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError("the model folder has no tokenizer.json")
        self.tokenizer: Tokenizer = tokenizer
        self.max_model_len: int = self.engine.engine.max_model_len
        self.max_num_seqs: int = self.engine.engine.config.max_num_seqs  # sequences run at once
        # Held while admitting, so that once `stop_admitting` returns no request can still start.
        self._admitting = threading.Lock()
        self._closed = threading.Event()  # shared with the adapter views

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str, priority: int = 0
    ) -> RequestStream:
        with self._admitting:
            if self._closed.is_set():
                raise ReplicaClosed("this model version is being replaced; retry", retry_after=1)
            return self.engine.generate(prompt_ids, params, request_id, self.lora, priority)

    async def open(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str,
        *,
        whole: bool = False,
        priority: int = 0,
    ) -> RequestStream:
        """`generate`, as the completions call it (a runtime on Ray admits remotely, and answers a
        `whole` request in one call)."""
        return self.generate(prompt_ids, params, request_id, priority)

    def check_prompt(self, prompt_ids: list[int], params: SamplingParams) -> int:
        """Refuse (400 naming the field) what the engine would refuse; the effective max_tokens."""
        return self.engine.engine.check_prompt(prompt_ids, params)

    @property
    def max_lora_rank(self) -> int | None:
        """The largest adapter rank the engine serves; None when it serves none (max_loras 0)."""
        slots = self.engine.engine.runner.adapters
        return None if slots is None else slots.max_rank

    def with_adapter(self, lora: LoraRequest) -> LLMRuntime:
        """This runtime, answering on the adapter `lora` (a shallow copy sharing everything else)."""
        view = copy.copy(self)
        view.lora = lora
        return view

    def stop_admitting(self) -> None:
        with self._admitting:
            self._closed.set()

    @property
    def running(self) -> int:
        """Requests admitted and not finished (what a replaced runtime waits for before closing)."""
        return self.engine.num_active

    def close(self) -> None:
        self.stop_admitting()
        self.engine.shutdown()
