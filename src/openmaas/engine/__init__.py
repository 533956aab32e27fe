"""The LLM engine: paged KV cache, continuous-batching scheduler, model runner, sampler, models.

Public API: `EngineConfig`, `SamplingParams`, `LLMEngine` (synchronous step loop),
`AsyncLLMEngine` (asyncio streaming front), `Tokenizer`, and the output types. From a server:

    engine = AsyncLLMEngine.from_config(EngineConfig(model="/path/to/hf-folder"))
    ids = engine.tokenizer.encode_chat(messages)            # or tokenizer.encode(prompt)
    stream = engine.generate(ids, SamplingParams(max_tokens=None, temperature=0.7), request_id)
    async with stream:                                      # raises InvalidRequest/ServiceUnavailable
        async for out in stream:                            # RequestOutput per choice and step
            send(out.index, out.text_delta, out.finish_reason)
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
