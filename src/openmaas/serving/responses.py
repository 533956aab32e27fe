"""OpenAI's Responses API on the chat-completions use-case: a request becomes a chat completion
(the conversation so far as messages, function tools, `text.format` as `response_format`), which
`Inference` checks, meters and runs as any other; its answer is reshaped into a response object,
or its stream of chunks into the Responses API's semantic events. No second pipeline: the limits,
metering, tool parsing and grammar-constrained decoding are the chat completion's.

With `store` (OpenAI's default), the answer and the input items up to it are stored for the
organisation (serving/response_store.py), so `previous_response_id` continues the conversation:
the stored items, the stored output, then the new input. `instructions` are not carried over, as
OpenAI does not.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from anyio import to_thread
from pydantic import TypeAdapter, ValidationError

from openmaas import errors
from openmaas.ids import new_id
from openmaas.serving.inference import Answer, Inference
from openmaas.serving.openai_types import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    StreamOptions,
    ToolCall,
)
from openmaas.serving.response_events import ResponseEvents, call_item, output_items, response_object
from openmaas.serving.response_store import ResponseStore
from openmaas.serving.responses_types import (
    FormatJsonObject,
    FormatJsonSchema,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    MessageItem,
    NamedFunctionChoice,
    ResponseRequest,
)
from openmaas.tenancy import scopes
from openmaas.tenancy.auth import Principal

T = TypeVar("T")
Item = MessageItem | FunctionCallItem | FunctionCallOutputItem
_ITEMS: TypeAdapter[list[Item]] = TypeAdapter(list[InputItem])
_TOOL_PARAM = re.compile(r"^tools\.(\d+)\.function\.")


class Responses:
    def __init__(self, inference: Inference, store: ResponseStore) -> None:
        self._inference = inference
        self._store = store

    async def create(
        self, caller: Principal, body: ResponseRequest, request_id: str
    ) -> Answer[dict[str, Any]]:
        """A response, whole; stored unless `store` is false."""
        org_id = _caller_org(caller)
        items = await self._conversation(org_id, body)
        chat = chat_request(body, items)
        answer = await _in_responses_terms(self._inference.complete(caller, chat, request_id))
        choice = answer.result["choices"][0]
        message = choice["message"]
        calls = [
            call_item(new_id("fc_"), call["id"], call["function"]["name"], call["function"]["arguments"])
            for call in message.get("tool_calls") or []
        ]
        output = output_items(message["content"], calls, choice["finish_reason"])
        response = response_object(
            body,
            new_id("resp_"),
            answer.result["created"],
            output,
            choice["finish_reason"],
            answer.result["usage"],
        )
        if body.store:
            await to_thread.run_sync(self._store.save, org_id, _dumped(items), response)
        return Answer(answer.served, response, answer.headers)

    async def stream(
        self, caller: Principal, body: ResponseRequest, request_id: str
    ) -> Answer[AsyncIterator[bytes]]:
        """A response streamed as the Responses API's server-sent events; admitted before the first."""
        org_id = _caller_org(caller)
        items = await self._conversation(org_id, body)
        chat = chat_request(body, items)
        answer = await _in_responses_terms(self._inference.stream(caller, chat, request_id))
        events = ResponseEvents(body, new_id("resp_"))
        saved = (lambda response: self._store_later(org_id, items, response)) if body.store else None
        return Answer(answer.served, events.run(answer.result, saved), answer.headers)

    async def _store_later(self, org_id: str, items: list[Item], response: dict[str, Any]) -> None:
        await to_thread.run_sync(self._store.save, org_id, _dumped(items), response)

    async def get(self, caller: Principal, response_id: str) -> dict[str, Any]:
        org_id = _caller_org(caller)
        stored = await to_thread.run_sync(self._store.load, org_id, response_id)
        if stored is None:
            raise _not_found(response_id, None)
        return stored.response

    async def delete(self, caller: Principal, response_id: str) -> dict[str, Any]:
        org_id = _caller_org(caller)
        if not await to_thread.run_sync(self._store.delete, org_id, response_id):
            raise _not_found(response_id, None)
        return {"id": response_id, "object": "response", "deleted": True}

    async def _conversation(self, org_id: str, body: ResponseRequest) -> list[Item]:
        """The input items the model answers: a previous response's (its input and output), then
        this request's."""
        items = body.items()
        if body.previous_response_id is None:
            return items
        stored = await to_thread.run_sync(self._store.load, org_id, body.previous_response_id)
        if stored is None:
            raise _not_found(body.previous_response_id, "previous_response_id")
        return [*_ITEMS.validate_python([*stored.items, *stored.response["output"]]), *items]


def _caller_org(caller: Principal) -> str:
    # Stored responses hold conversations: the inference scope reads them, as it made them.
    caller.require(scopes.INFERENCE)
    return caller.require_org()


def _not_found(response_id: str, param: str | None) -> errors.NotFound:
    what = "Previous response" if param else "Response"
    code = "previous_response_not_found" if param else "response_not_found"
    return errors.NotFound(f"{what} with id {response_id[:64]!r} not found.", param=param, code=code)


def _dumped(items: list[Item]) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in items]


async def _in_responses_terms(call: Awaitable[T]) -> T:
    """The chat completion's refusals, naming the Responses API's parameters."""
    try:
        return await call
    except errors.InvalidRequest as refused:
        refused.param = responses_param(refused.param)
        raise


def responses_param(param: str | None) -> str | None:
    """A chat completion's parameter as the Responses API names it."""
    if param is None:
        return None
    if param.startswith("messages"):
        return "input"
    if param.startswith("response_format"):
        return "text.format"
    if param in ("max_tokens", "max_completion_tokens"):
        return "max_output_tokens"
    if param == "tool_choice.function.name":
        return "tool_choice.name"
    return _TOOL_PARAM.sub(r"tools.\1.", param)


# ---------------------------------------------------------------------------------------------
# The request as a chat completion


def chat_messages(instructions: str | None, items: list[Item]) -> list[ChatMessage]:
    """Input items as chat messages: instructions first as the system message; a model's calls
    (function_call items) joined to the assistant message before them, each output a tool message."""
    messages = [ChatMessage(role="system", content=instructions)] if instructions else []
    for item in items:
        if isinstance(item, MessageItem):
            messages.append(ChatMessage(role=item.role, content=item.text()))
        elif isinstance(item, FunctionCallItem):
            call = ToolCall(
                id=item.call_id,
                type="function",
                function=FunctionCall(name=item.name, arguments=item.arguments),
            )
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                last.tool_calls = [*(last.tool_calls or []), call]
            else:
                messages.append(ChatMessage(role="assistant", content=None, tool_calls=[call]))
        else:
            messages.append(ChatMessage(role="tool", content=item.text(), tool_call_id=item.call_id))
    return messages


def chat_request(body: ResponseRequest, items: list[Item]) -> ChatCompletionRequest:
    messages = chat_messages(body.instructions, items)
    if not messages:
        raise errors.InvalidRequest("input holds no items (and there are no instructions).", param="input")
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": messages,
        "max_completion_tokens": body.max_output_tokens,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "parallel_tool_calls": body.parallel_tool_calls,
        "stream": body.stream,
        "seed": body.seed,
        "user": body.user,
    }
    if body.stream:
        fields["stream_options"] = StreamOptions(include_usage=True)
    if body.tools is not None:
        fields["tools"] = [
            {"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
            for tool in body.tools
        ]
    choice = body.tool_choice
    if isinstance(choice, NamedFunctionChoice):
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None:
        fields["tool_choice"] = choice
    fmt = body.text.format if body.text else None
    if isinstance(fmt, FormatJsonObject):
        fields["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, FormatJsonSchema):
        schema = fmt.model_dump(by_alias=True, exclude={"type"}, exclude_none=True)
        fields["response_format"] = {"type": "json_schema", "json_schema": schema}
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:  # what this module's own checks let through: still the user's input
        raise errors.InvalidRequest(f"input: {exc.errors()[0]['msg']}", param="input") from None
