"""The Responses API's mapping onto chat completions (serving/responses.py), its answers and stream
events (serving/response_events.py), and the stored responses' lifetime (serving/response_store.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from openmaas import errors
from openmaas.db.database import Database
from openmaas.serving.openai_types import NamedToolChoice, ResponseFormatJsonSchema
from openmaas.serving.response_events import ResponseEvents, call_item, output_items, response_object
from openmaas.serving.response_store import ResponseStore
from openmaas.serving.responses import chat_request, responses_param
from openmaas.serving.responses_types import ResponseRequest
from openmaas.tables import Base, tenancy_tables
from tests.support.clock import FakeClock

TOOL = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}


def _request(**fields: Any) -> ResponseRequest:
    return ResponseRequest.model_validate({"model": "m", "input": "hi", **fields})


def test_items_become_chat_messages_with_calls_joined_to_the_assistant_turn() -> None:
    body = _request(
        instructions="Be brief.",
        input=[
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Let me see."}],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "two"}],
            },
        ],
        tools=[TOOL],
    )
    chat = chat_request(body, body.items())
    shape = [(m.role, m.content, [c.id for c in m.tool_calls or []], m.tool_call_id) for m in chat.messages]
    assert shape == [
        ("system", "Be brief.", [], None),
        ("user", "ab", [], None),
        ("assistant", "Let me see.", ["c1", "c2"], None),
        ("tool", "one", [], "c1"),
        ("tool", "two", [], "c2"),
    ]


def test_a_call_with_no_text_before_it_is_an_assistant_message_without_content() -> None:
    body = _request(input=[{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}])
    (message,) = chat_request(body, body.items()).messages
    assert message.role == "assistant" and message.content is None and message.tool_calls


def test_parameters_map_onto_the_chat_completion() -> None:
    schema = {"type": "object"}
    body = _request(
        tools=[TOOL],
        tool_choice={"type": "function", "name": "f"},
        parallel_tool_calls=False,
        max_output_tokens=7,
        temperature=0.5,
        text={"format": {"type": "json_schema", "name": "x", "schema": schema, "strict": True}},
        stream=True,
        seed=4,
    )
    chat = chat_request(body, body.items())
    assert chat.tools is not None and chat.tools[0].function.name == "f"
    assert chat.tools[0].function.parameters == TOOL["parameters"]
    assert isinstance(chat.tool_choice, NamedToolChoice) and chat.tool_choice.function.name == "f"
    assert chat.parallel_tool_calls is False
    assert isinstance(chat.response_format, ResponseFormatJsonSchema)
    assert chat.response_format.json_schema.json_schema == schema
    assert chat.stream_options is not None and chat.stream_options.include_usage  # the usage ends the stream
    params = chat.to_sampling()
    assert (params.max_tokens, params.temperature, params.seed) == (7, 0.5, 4)
    plain = chat_request(_request(), _request().items())
    assert plain.to_sampling().temperature == 1.0 and plain.response_format is None and plain.tools is None


def test_no_items_and_no_instructions_is_a_400_on_input() -> None:
    with pytest.raises(errors.InvalidRequest) as refused:
        chat_request(_request(input=[]), [])
    assert refused.value.param == "input"


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"tools": [{"type": "web_search"}]}, ("tools", 0, "type")),
        ({"input": [{"type": "reasoning"}]}, ("input", 0)),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            ("input", 0, "message", "content"),
        ),
        ({"tool_choice": {"type": "web_search"}}, ("tool_choice",)),
        ({"text": {"format": {"type": "grammar"}}}, ("text", "format")),
        ({"background": True}, ("background",)),
    ],
)
def test_what_is_not_supported_is_refused_naming_the_field(
    fields: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    with pytest.raises(ValidationError) as refused:
        _request(**fields)
    assert refused.value.errors()[0]["loc"][: len(loc)] == loc


@pytest.mark.parametrize(
    ("chat", "responses"),
    [
        ("messages.3.tool_call_id", "input"),
        ("response_format", "text.format"),
        ("max_completion_tokens", "max_output_tokens"),
        ("tools.2.function.parameters", "tools.2.parameters"),
        ("tool_choice.function.name", "tool_choice.name"),
        ("tools", "tools"),
        (None, None),
    ],
)
def test_chat_parameters_are_named_as_the_responses_api_names_them(
    chat: str | None, responses: str | None
) -> None:
    assert responses_param(chat) == responses


def _frames(chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    async def frames() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield b"data: " + orjson.dumps({"created": 5, **chunk}) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return frames()


def _stream(
    body: ResponseRequest, chunks: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    stored: list[dict[str, Any]] = []

    async def store(response: dict[str, Any]) -> None:
        stored.append(response)

    async def run() -> list[dict[str, Any]]:
        events = ResponseEvents(body, "resp_1").run(_frames(chunks), store)
        return [orjson.loads(frame.split(b"\ndata: ", 1)[1]) async for frame in events]

    return asyncio.run(run()), stored


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}


def test_a_stream_of_text_then_calls_becomes_the_semantic_events_and_the_whole_answer() -> None:
    head = {"index": 0, "type": "function", "function": {"name": "f", "arguments": ""}}
    chunks = [
        _choice({"role": "assistant", "content": None}),
        _choice({"content": "Hi"}),
        _choice({"content": " there"}),
        _choice({"tool_calls": [{**head, "id": "call_a"}]}),
        _choice({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        _choice({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        _choice({"tool_calls": [{**head, "index": 1, "id": "call_b"}]}),
        _choice({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}, "tool_calls"),
        USAGE,
    ]
    events, stored = _stream(_request(), chunks)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    final = events[-1]["response"]
    assert stored == [final]
    calls = [
        call_item(item["id"], item["call_id"], item["name"], item["arguments"])
        for item in final["output"][1:]
    ]
    whole = response_object(
        _request(), "resp_1", 5, output_items("Hi there", calls, "tool_calls"), "tool_calls", USAGE["usage"]
    )
    for item, expected in zip(final["output"], whole["output"], strict=True):
        assert {**item, "id": None} == {**expected, "id": None}
    assert {**final, "output": None} == {**whole, "output": None}
    assert [(i["call_id"], i["arguments"]) for i in final["output"][1:]] == [
        ("call_a", '{"x": 1}'),
        ("call_b", "{}"),
    ]
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [e["item"] for e in done] == final["output"]  # what each item ended as is what the answer holds


def test_an_answer_cut_short_is_incomplete_and_an_empty_one_an_empty_message() -> None:
    events, _ = _stream(_request(max_output_tokens=1), [_choice({"content": "a"}, "length"), USAGE])
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["output"][0]["status"] == "incomplete"
    events, _ = _stream(_request(), [_choice({"content": ""}, "stop"), USAGE])
    assert [item["content"][0]["text"] for item in events[-1]["response"]["output"]] == [""]
    assert events[-1]["type"] == "response.completed"


def test_a_chat_stream_that_fails_part_way_ends_with_an_error_event_and_stores_nothing() -> None:
    lost = errors.ServiceUnavailable("The model replica stopped.", retry_after=1, code="replica_lost")
    events, stored = _stream(_request(), [_choice({"content": "Hi"}), lost.to_dict()])
    assert [e["type"] for e in events][-2:] == ["response.output_text.delta", "error"]
    assert {k: events[-1][k] for k in ("code", "message", "param")} == {
        "code": "replica_lost",
        "message": "The model replica stopped.",
        "param": None,
    }
    assert stored == []


def test_stored_responses_expire_and_belong_to_their_organisation(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(db.engine)
    clock = FakeClock()
    with db.session() as session:
        for org in ("org_a", "org_b"):
            session.add(tenancy_tables.Organization(id=org, name=org, created_at=clock.now()))
    store = ResponseStore(db, clock, ttl_s=60)
    store.save("org_a", [{"role": "user", "content": "hi"}], {"id": "resp_1", "output": []})
    assert store.load("org_a", "resp_1") is not None
    assert store.load("org_b", "resp_1") is None and not store.delete("org_b", "resp_1")
    clock.advance(61)
    assert store.load("org_a", "resp_1") is None  # expired: not served
    store.save("org_a", [], {"id": "resp_2", "output": []})  # and deleted by the next save
    with db.read_session() as session:
        assert [row.id for row in session.query(Base.metadata.tables["stored_responses"]).all()] == ["resp_2"]
    assert store.delete("org_a", "resp_2") and store.load("org_a", "resp_2") is None
    db.dispose()
