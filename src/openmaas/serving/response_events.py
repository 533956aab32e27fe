"""The Responses API's answers: the response object and its output items, and a chat completion's
stream of chunks retold as the Responses API's semantic events (`response.created`, …,
`response.output_text.delta`, …, `response.completed`), each with its `sequence_number`.

The stream's final response is built by the same functions as a whole answer's, from what the
events carried, so a client that reassembles the events gets the response it would have got whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import orjson

from openmaas.ids import new_id
from openmaas.serving.responses_types import NamedFunctionChoice, ResponseRequest

Stored = Callable[[dict[str, Any]], Awaitable[None]]


def message_item(item_id: str, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": _item_status(finish_reason),
        "role": "assistant",
        "content": [_text_part(text)],
    }


def _item_status(finish_reason: str | None) -> str:
    return (
        "in_progress" if finish_reason is None else "incomplete" if finish_reason == "length" else "completed"
    )


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(item_id: str, call_id: str, name: str, arguments: str, done: bool = True) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": "completed" if done else "in_progress",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def output_items(
    content: str | None, calls: list[dict[str, Any]], finish_reason: str | None
) -> list[dict[str, Any]]:
    """An answer's output: its text as a message (always, unless it is calls only), then its calls."""
    if calls and not content:
        return calls
    return [message_item(new_id("msg_"), content or "", finish_reason), *calls]


def response_object(
    body: ResponseRequest,
    response_id: str,
    created: int,
    output: list[dict[str, Any]],
    finish_reason: str | None,
    usage: dict[str, int] | None,
) -> dict[str, Any]:
    """OpenAI's response object; `finish_reason` None: still in progress."""
    status = _item_status(finish_reason)
    fmt = body.text.format if body.text else None
    choice = body.tool_choice
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "model": body.model,
        "output": output,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": body.store,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": {"format": fmt.model_dump(by_alias=True) if fmt else {"type": "text"}},
        "tool_choice": choice.model_dump() if isinstance(choice, NamedFunctionChoice) else choice or "auto",
        "tools": [tool.model_dump() for tool in body.tools or []],
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": "disabled",
        "usage": None if usage is None else _usage(usage),
        "user": body.user,
        "metadata": body.metadata or {},
    }


def _usage(chat_usage: dict[str, int]) -> dict[str, Any]:
    return {
        "input_tokens": chat_usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": chat_usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": chat_usage["total_tokens"],
    }


class ResponseEvents:
    """One streamed response: chat chunks (n = 1, usage included) in, Responses events out."""

    def __init__(self, body: ResponseRequest, response_id: str) -> None:
        self.body = body
        self.response_id = response_id
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.text: dict[str, Any] | None = None  # the open message item
        self.calls: dict[int, dict[str, Any]] = {}  # the open call items, by the chunks' call index
        self.finish_reason: str | None = None

    async def run(self, frames: AsyncIterator[bytes], stored: Stored | None) -> AsyncIterator[bytes]:
        async with aclosing(frames):  # type: ignore[type-var]  # a client leaving closes the chat stream too
            created, usage = 0, None
            started = False
            async for frame in frames:
                if frame.startswith(b"data: [DONE]"):
                    break
                chunk = orjson.loads(frame[6:])
                if "error" in chunk:  # the chat stream failed part-way (serving/completions.py)
                    error = chunk["error"]
                    fields = {"code": error["code"], "message": error["message"], "param": error["param"]}
                    yield self._event("error", **fields)
                    return
                if not started:
                    created, started = chunk["created"], True
                    head = response_object(self.body, self.response_id, created, [], None, None)
                    yield self._event("response.created", response=head)
                    yield self._event("response.in_progress", response=head)
                usage = chunk.get("usage") or usage
                for choice in chunk["choices"]:
                    for event in self._choice(choice):
                        yield event
            for event in self._close_all():
                yield event
            if not self.output:  # an empty answer is an empty message, as when whole
                for event in [*self._open_text(), *self._close_text()]:
                    yield event
            response = response_object(
                self.body, self.response_id, created, self.output, self.finish_reason, usage
            )
            if stored is not None:
                await stored(response)
            kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
            yield self._event(kind, response=response)

    def _choice(self, choice: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        delta = choice["delta"]
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if delta.get("content"):
            if self.text is None:
                events += self._open_text()
            assert self.text is not None
            self.text["content"][0]["text"] += delta["content"]
            events.append(
                self._event(
                    "response.output_text.delta",
                    **self._part_of(self.text),
                    delta=delta["content"],
                    logprobs=[],
                )
            )
        for call in delta.get("tool_calls") or []:
            if "id" in call:
                events += self._close_text()
                item = call_item(new_id("fc_"), call["id"], call["function"]["name"], "", done=False)
                self.calls[call["index"]] = item
                events.append(self._added(item))
            arguments = call.get("function", {}).get("arguments")
            if arguments:
                item = self.calls[call["index"]]
                item["arguments"] += arguments
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=self.output.index(item),
                        delta=arguments,
                    )
                )
        return events

    def _open_text(self) -> list[bytes]:
        item = message_item(new_id("msg_"), "", None)
        item["content"] = []
        self.text = item
        part = _text_part("")
        added = self._added(item)
        item["content"].append(part)
        return [added, self._event("response.content_part.added", **self._part_of(item), part=dict(part))]

    def _close_text(self) -> list[bytes]:
        item, self.text = self.text, None
        if item is None:
            return []
        item["status"] = _item_status(self.finish_reason or "stop")
        part = item["content"][0]
        where = self._part_of(item)
        return [
            self._event("response.output_text.done", **where, text=part["text"], logprobs=[]),
            self._event("response.content_part.done", **where, part=part),
            self._event("response.output_item.done", output_index=where["output_index"], item=item),
        ]

    def _close_all(self) -> list[bytes]:
        events = self._close_text()
        for item in self.calls.values():
            index = self.output.index(item)
            item["status"] = "completed"
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
            events.append(self._event("response.output_item.done", output_index=index, item=item))
        self.calls = {}
        return events

    def _added(self, item: dict[str, Any]) -> bytes:
        self.output.append(item)
        return self._event("response.output_item.added", output_index=len(self.output) - 1, item=item)

    def _part_of(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self.output.index(item), "content_index": 0}

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
