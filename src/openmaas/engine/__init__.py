"""The LLM engine: paged KV cache, continuous-batching scheduler, model runner, sampler, models.

Public API: `EngineConfig`, `SamplingParams`, `LLMEngine` (synchronous step loop),
`AsyncLLMEngine` (asyncio streaming front), `Tokenizer`, and the output types.
"""

from openmaas.engine.async_engine import AsyncLLMEngine, RequestStream
from openmaas.engine.config import EngineConfig
from openmaas.engine.llm_engine import EngineStats, LLMEngine
from openmaas.engine.outputs import CompletionResult, RequestOutput, TokenLogprob
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.tokenizer import Tokenizer

__all__ = [
    "AsyncLLMEngine",
    "CompletionResult",
    "EngineConfig",
    "EngineStats",
    "LLMEngine",
    "RequestOutput",
    "RequestStream",
    "SamplingParams",
    "TokenLogprob",
    "Tokenizer",
]
