"""The text-generation runtime: our LLM engine behind its asyncio front, with the model's
tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path

from openmaas.engine.async_engine import AsyncLLMEngine
from openmaas.engine.llm_engine import LLMEngine
from openmaas.engine.tokenizer import Tokenizer
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

    def close(self) -> None:
        self.engine.shutdown()
