"""The text-generation runtime: our LLM engine behind its asyncio front, with the model's
tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openmaas.engine.async_engine import AsyncLLMEngine
from openmaas.engine.llm_engine import LLMEngine
from openmaas.engine.tokenizer import Tokenizer

# Deployment settings the engine takes (others are refused when the deployment is created).
ENGINE_OPTIONS = frozenset(
    {
        "max_num_seqs",
        "max_num_batched_tokens",
        "max_model_len",
        "kv_cache_memory_bytes",
        "num_blocks",
        "block_size",
        "dtype",
        "device",
        "enable_prefix_caching",
        "max_waiting_requests",
        "num_threads",
    }
)


class LLMRuntime:
    task = "text-generation"

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        options = {k: v for k, v in config.items() if k in ENGINE_OPTIONS}
        self.engine = AsyncLLMEngine(LLMEngine.from_pretrained(folder, **options))
        tokenizer = self.engine.tokenizer
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError("the model folder has no tokenizer.json")
        self.tokenizer: Tokenizer = tokenizer
        self.max_model_len: int = self.engine.engine.max_model_len

    def close(self) -> None:
        self.engine.shutdown()
