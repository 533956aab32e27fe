"""The text-generation runtime: our LLM engine behind its asyncio front, with the model's
tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openmaas.engine.async_engine import AsyncLLMEngine
from openmaas.engine.llm_engine import LLMEngine
from openmaas.engine.tokenizer import Tokenizer

# Deployment settings the engine takes, with their types (others are refused when the deployment is
# created, and so is a value of another type: "false" is not a bool).
ENGINE_SETTINGS: dict[str, type] = {
    "max_num_seqs": int,
    "max_num_batched_tokens": int,
    "max_model_len": int,
    "kv_cache_memory_bytes": int,
    "num_blocks": int,
    "block_size": int,
    "dtype": str,
    "device": str,
    "enable_prefix_caching": bool,
    "max_waiting_requests": int,
    "num_threads": int,
    "cpu_kernels": bool,
    "cpu_onednn": bool,
}
ENGINE_OPTIONS = frozenset(ENGINE_SETTINGS)


def engine_setting_error(name: str, value: object) -> str | None:
    """Why `value` cannot be the engine setting `name`, or None if it can."""
    expected = ENGINE_SETTINGS[name]
    # bool is an int in Python: keep the two apart both ways.
    if isinstance(value, expected) and (expected is bool or not isinstance(value, bool)):
        return None
    return f"engine setting {name!r} must be {'true or false' if expected is bool else expected.__name__}"


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
