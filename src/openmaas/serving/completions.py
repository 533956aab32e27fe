"""Chat completions and completions on an LLM runtime, in OpenAI's response shapes, whole or
streamed as server-sent events: the two metered calls `serving.inference` runs for them, and the
shapes of their answers.

A stream's client going away cancels the task reading it; the engine's request stream turns that
cancellation into an abort, which frees the request's KV blocks before the next step. A stream
that fails part-way (its Ray replica lost, an engine failure) ends with an error event, OpenAI's
error object, and is billed for the tokens it was sent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import orjson

from openmaas import errors
from openmaas.engine.async_engine import RequestStream
from openmaas.engine.guided import GrammarSpec
from openmaas.engine.outputs import CompletionResult, RequestOutput, TokenLogprob
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.tokenizer import Tokenizer
from openmaas.ids import new_id
from openmaas.serving.directory import ServedModel
from openmaas.serving.openai_types import ChatCompletionRequest, CompletionRequest, usage
from openmaas.serving.runtimes.llm import LLMRuntime
from openmaas.serving.tool_calls import Call, CallStream
from openmaas.serving.tools import (
    ToolUse,
    call_grammar,
    call_stream,
    parse,
    template_messages,
    tool_use,
)
from openmaas.serving.usage import RequestUsage, Units
from openmaas.tasks import TEXT_GENERATION

log = logging.getLogger("openmaas.serving")


@dataclass(frozen=True)
class Generation:
    runtime: LLMRuntime
    model: str
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    created: int
    tools: ToolUse | None = None  # a chat request with tools
    priority: int = 0  # the engine's: live requests 0, batch lines `inference.BATCH_PRIORITY`


class _Completion:
    """What a completion, whole or streamed, checks before it is admitted: a text-generation model,
    and the prompt it tokenises (whose length, with the most it may generate, is its worst case)."""

    cold_start = True  # an LLM on Ray replicas may scale to zero: the first request waits for it

    def __init__(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        request_id: str,
        created: int,
        priority: int = 0,
    ) -> None:
        self.body = body
        self.request_id = request_id
        self.created = created  # Unix seconds, OpenAI's `created`
        self.priority = priority
        self.generation: Generation

    def check(self, served: ServedModel) -> Units:
        runtime = served.runtime
        if runtime.task != TEXT_GENERATION:
            what = "chat completions" if isinstance(self.body, ChatCompletionRequest) else "completions"
            raise errors.InvalidRequest(
                f"Model {self.body.model!r} does not support {what}.", param="model", code="wrong_model_type"
            )
        if isinstance(self.body, ChatCompletionRequest):
            self.generation = _chat_generation(runtime, self.body, self.request_id, self.created)
        else:
            self.generation = _text_generation(runtime, self.body, self.request_id, self.created)
        if self.priority:
            self.generation = replace(self.generation, priority=self.priority)
        # What the engine would refuse (past the context, ids outside the vocabulary) is refused
        # now, before admission: a stream that is refused once started breaks its connection.
        try:
            runtime.check_prompt(self.generation.prompt_ids, self.generation.params)
        except errors.InvalidRequest as refused:
            tools = self.generation.tools
            if tools is None or not tools.forced or refused.param != "response_format":
                raise
            raise errors.InvalidRequest(refused.message, param="tools", code=refused.code) from None
        worst = _worst_output_tokens(self.generation)
        return {"requests": 1, "input_tokens": len(self.generation.prompt_ids), "output_tokens": worst}


class Completion(_Completion):
    """A completion answered whole: its result is OpenAI's response object."""

    async def run(self, served: ServedModel, usage_: RequestUsage) -> dict[str, Any]:
        results = await _generate(self.generation, usage_)
        if isinstance(self.body, ChatCompletionRequest):
            return _chat_response(self.generation, results)
        return _completion_response(self.generation, results, self.body.echo)

    def used(self, response: dict[str, Any]) -> Units:
        tokens = response["usage"]  # what the answer reports is what is metered
        return {
            "requests": 1,
            "input_tokens": tokens["prompt_tokens"],
            "output_tokens": tokens["completion_tokens"],
        }


class StreamedCompletion(_Completion):
    """A completion streamed as server-sent events: its result is the frames, which record the
    request's usage themselves as the stream ends (or its client leaves)."""

    async def run(self, served: ServedModel, usage_: RequestUsage) -> AsyncIterator[bytes]:
        options = self.body.stream_options
        # Admitted here, not at the first frame: a replaced runtime's refusal (`ReplicaClosed`) is
        # then retried on the new one before the response begins.
        stream = await _start(self.generation, usage_)
        return _stream_events(
            self.generation,
            stream,
            chat=isinstance(self.body, ChatCompletionRequest),
            include_usage=bool(options and options.include_usage),
            usage_=usage_,
        )

    def used(self, frames: AsyncIterator[bytes]) -> None:
        return None  # the frames record it


def _chat_generation(
    runtime: LLMRuntime, body: ChatCompletionRequest, request_id: str, created: int
) -> Generation:
    tools = tool_use(body, runtime.tokenizer.chat_template)
    messages = template_messages(body.messages)
    prompt = runtime.tokenizer.encode_chat(messages, tools=tools.tools if tools else None)
    params = body.to_sampling()
    if tools is not None and tools.forced:  # the answer must be a call: decoding keeps it one
        params.grammar = GrammarSpec("lark", call_grammar(tools, runtime.tokenizer.token_id))
    return Generation(runtime, body.model, f"chatcmpl-{request_id}", prompt, params, created, tools)


def _text_generation(
    runtime: LLMRuntime, body: CompletionRequest, request_id: str, created: int
) -> Generation:
    prompt = body.prompt if isinstance(body.prompt, list) else runtime.tokenizer.encode(body.prompt)
    return Generation(runtime, body.model, f"cmpl-{request_id}", prompt, body.to_sampling(), created)


def _worst_output_tokens(gen: Generation) -> int:
    """The most output tokens the request can produce: what its budget hold must cover."""
    limit = gen.params.max_tokens or max(gen.runtime.max_model_len - len(gen.prompt_ids), 1)
    return limit * gen.params.n


async def _start(gen: Generation, usage_: RequestUsage, *, whole: bool = False) -> RequestStream:
    """The request admitted by its runtime (`whole`: it will be read to its end, not streamed)."""
    try:
        return await gen.runtime.open(
            gen.prompt_ids, gen.params, gen.request_id, whole=whole, priority=gen.priority
        )
    except BaseException:
        usage_.abandon()  # refused before any work, or lost before any output: nothing to meter
        raise


async def _generate(gen: Generation, usage_: RequestUsage) -> list[CompletionResult]:
    """Every choice to its end; a failure part-way records what was generated."""
    results = [CompletionResult(gen.request_id, index) for index in range(gen.params.n)]
    stream = await _start(gen, usage_, whole=True)
    try:
        async with stream:
            async for out in stream:
                results[out.index].add(out)
    except BaseException:
        usage_.record(len(gen.prompt_ids), sum(r.completion_tokens for r in results))
        raise
    return results


def _chat_response(gen: Generation, results: list[CompletionResult]) -> dict[str, Any]:
    tokenizer = gen.runtime.tokenizer
    choices: list[dict[str, Any]] = [
        {
            "index": r.index,
            "message": {"role": "assistant", "content": r.text},
            "logprobs": _chat_logprobs(tokenizer, r.logprobs) if gen.params.logprobs else None,
            "finish_reason": r.finish_reason,
        }
        for r in results
    ]
    if gen.tools is not None and gen.tools.parse is not None:
        for choice, r in zip(choices, results, strict=True):
            content, calls = parse(gen.tools, r.text)
            if calls:
                choice["message"] = {
                    "role": "assistant",
                    "content": content,
                    "tool_calls": _tool_calls(calls),
                }
                choice["finish_reason"] = _finish_reason(r.finish_reason, True)
    return {
        "id": gen.request_id,
        "object": "chat.completion",
        "created": gen.created,
        "model": gen.model,
        "choices": choices,
        "usage": usage(len(gen.prompt_ids), sum(r.completion_tokens for r in results)),
    }


def _completion_response(gen: Generation, results: list[CompletionResult], echo: bool) -> dict[str, Any]:
    tokenizer = gen.runtime.tokenizer
    prefix = tokenizer.decode(gen.prompt_ids) if echo else ""
    choices = [
        {
            "index": r.index,
            "text": prefix + r.text,
            "logprobs": _completion_logprobs(tokenizer, r.logprobs) if gen.params.logprobs else None,
            "finish_reason": r.finish_reason,
        }
        for r in results
    ]
    return {
        "id": gen.request_id,
        "object": "text_completion",
        "created": gen.created,
        "model": gen.model,
        "choices": choices,
        "usage": usage(len(gen.prompt_ids), sum(r.completion_tokens for r in results)),
    }


async def _stream_events(
    gen: Generation, stream: RequestStream, *, chat: bool, include_usage: bool, usage_: RequestUsage
) -> AsyncIterator[bytes]:
    """SSE frames: role first (chat), then deltas, a finish_reason per choice, usage, [DONE]."""
    completion_tokens = 0
    kind = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": gen.request_id, "object": kind, "created": gen.created, "model": gen.model}
    calls = _CallStreams(gen) if chat and gen.tools is not None and gen.tools.parse is not None else None
    try:
        async with stream:
            if chat:
                # With tools the answer may be calls only, whose content is null (not "").
                first = None if calls is not None else ""
                opening = [
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": first},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                    for i in range(gen.params.n)
                ]
                yield _frame({**head, "choices": opening})
            async for out in stream:
                completion_tokens += len(out.new_token_ids)
                if calls is not None:
                    for choice in calls.chunks(out):
                        yield _frame({**head, "choices": [choice]})
                elif out.text_delta or out.finished:
                    yield _frame({**head, "choices": [_chunk_choice(gen, out, chat)]})
    except Exception as exc:
        # Failed part-way (a replica lost, an engine failure): the response has begun, so the client
        # learns it from an error event, and is billed for what it was sent.
        usage_.record(len(gen.prompt_ids), completion_tokens)
        if not (isinstance(exc, errors.OpenMaaSError) and exc.status < 500):
            usage_.failed()
        await usage_.durable()
        yield _error_frame(exc)
        return
    finally:  # a dropped client: meter what was generated (a no-op when already recorded)
        usage_.record(len(gen.prompt_ids), completion_tokens)
    await usage_.durable()
    if include_usage:
        yield _frame({**head, "choices": [], "usage": usage(len(gen.prompt_ids), completion_tokens)})
    yield b"data: [DONE]\n\n"


def _chunk_choice(gen: Generation, out: RequestOutput, chat: bool) -> dict[str, Any]:
    tokenizer = gen.runtime.tokenizer
    if chat:
        logprobs = _chat_logprobs(tokenizer, out.logprobs) if gen.params.logprobs else None
        delta = {"content": out.text_delta} if out.text_delta else {}
        return {"index": out.index, "delta": delta, "logprobs": logprobs, "finish_reason": out.finish_reason}
    logprobs = _completion_logprobs(tokenizer, out.logprobs) if gen.params.logprobs else None
    return {
        "index": out.index,
        "text": out.text_delta,
        "logprobs": logprobs,
        "finish_reason": out.finish_reason,
    }


def _tool_calls(calls: list[Call]) -> list[dict[str, Any]]:
    return [
        {"id": new_id("call_"), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def _finish_reason(reason: str | None, called: bool) -> str | None:
    return "tool_calls" if called and reason == "stop" else reason


class _CallStreams:
    """A streamed chat answer with tools: each choice's text through its call parser, as OpenAI's
    chunks — content deltas, then per call one delta with its index, id, type, name and empty
    arguments and one with the arguments. A step's logprobs ride on its first chunk, or on the
    next chunk when its text is held back."""

    def __init__(self, gen: Generation) -> None:
        assert gen.tools is not None
        self.gen = gen
        self.parsers: list[CallStream] = []
        for _ in range(gen.params.n):
            parser = call_stream(gen.tools)
            assert parser is not None
            self.parsers.append(parser)
        self.calls = [0] * gen.params.n
        self.spoke = [False] * gen.params.n  # some content was streamed
        self.logprobs: list[list[TokenLogprob]] = [[] for _ in range(gen.params.n)]

    def chunks(self, out: RequestOutput) -> list[dict[str, Any]]:
        parser = self.parsers[out.index]
        events = parser.feed(out.text_delta) if out.text_delta else []
        if out.finished:
            events += parser.finish()
        if out.logprobs:
            self.logprobs[out.index] += out.logprobs
        deltas: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event, str):
                if deltas and "content" in deltas[-1]:
                    deltas[-1]["content"] += event
                elif event:
                    deltas.append({"content": event})
                continue
            index, self.calls[out.index] = self.calls[out.index], self.calls[out.index] + 1
            function = {"name": event.name, "arguments": ""}
            head = {"index": index, "id": new_id("call_"), "type": "function", "function": function}
            deltas.append({"tool_calls": [head]})
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": event.arguments}}]})
        if out.finished and not deltas:
            # An empty answer with no calls has content "", as when whole.
            said = self.calls[out.index] or self.spoke[out.index]
            deltas.append({} if said else {"content": ""})
        if any("content" in d for d in deltas):
            self.spoke[out.index] = True
        choices: list[dict[str, Any]] = [
            {"index": out.index, "delta": d, "logprobs": None, "finish_reason": None} for d in deltas
        ]
        if choices and self.gen.params.logprobs:
            choices[0]["logprobs"] = _chat_logprobs(self.gen.runtime.tokenizer, self.logprobs[out.index])
            self.logprobs[out.index] = []
        if out.finished:
            choices[-1]["finish_reason"] = _finish_reason(out.finish_reason, self.calls[out.index] > 0)
        return choices


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _error_frame(exc: Exception) -> bytes:
    """The event that ends a stream that failed part-way: OpenAI's error object (the official SDK
    raises it as an `APIError`); never a traceback."""
    if not isinstance(exc, errors.OpenMaaSError):
        log.error("a stream failed part-way", exc_info=exc)  # the client sees no traceback; the log does
        exc = errors.InternalError("The model failed while generating this answer; retry.")
    return _frame(exc.to_dict())


def _chat_logprobs(tokenizer: Tokenizer, logprobs: list[TokenLogprob] | None) -> dict[str, Any]:
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = tokenizer.token_text(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    content = [
        {**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(t, p) for t, p in lp.top_logprobs]}
        for lp in logprobs or []
    ]
    return {"content": content}


def _completion_logprobs(tokenizer: Tokenizer, logprobs: list[TokenLogprob] | None) -> dict[str, Any]:
    tokens = [tokenizer.token_text(lp.token_id) for lp in logprobs or []]
    offsets, position = [], 0
    for text in tokens:
        offsets.append(position)
        position += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [lp.logprob for lp in logprobs or []],
        "top_logprobs": [{tokenizer.token_text(t): p for t, p in lp.top_logprobs} for lp in logprobs or []],
        "text_offset": offsets,
    }
