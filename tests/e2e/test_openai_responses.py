"""The Responses API through the official `openai` SDK, unchanged, against a real server serving a
tiny random-weight Qwen2 model with the real Qwen2.5 chat template: text and message input,
instructions, a function-tool round trip, structured output, streamed events that reassemble to
the whole answer, `previous_response_id` continuation per organisation, `store: false`, and the
refusals naming the parameter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import openai
import pydantic
import pytest

from openmaas.api.app import create_app
from openmaas.engine.testing import build_tiny_model
from openmaas.engine.tokenizer import Tokenizer
from tests.data.chat_templates import QWEN25, use_template
from tests.e2e.test_openai_sdk import _deploy
from tests.support.platforms import make_platform
from tests.support.served import Served
from tests.support.server import running_server

ENGINE = {"kv_cache_memory_bytes": 16 * 1024 * 1024, "max_num_seqs": 8, "max_model_len": 2048}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
CITY = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 10}, "big": {"type": "boolean"}},
    "required": ["name", "big"],
    "additionalProperties": False,
}


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=10)
    big: bool


class Setup:
    def __init__(self, url: str, acme: str, other: str, reader: str, folder: Path) -> None:
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key=acme, max_retries=0)
        self.other = openai.OpenAI(base_url=f"{url}/v1", api_key=other, max_retries=0)
        self.reader = openai.OpenAI(
            base_url=f"{url}/v1", api_key=reader, max_retries=0
        )  # acme's, no inference
        self.tokenizer = Tokenizer.from_pretrained(folder)

    def prompt_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
        return len(self.tokenizer.encode_chat(messages, tools=tools))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("responses")
    platform = make_platform(root / "home", f"sqlite:///{root / 'openmaas.db'}")
    folder = use_template(build_tiny_model(root / "qwen", "qwen2", max_position_embeddings=2048), QWEN25)
    try:
        assert platform.new_admin_key is not None
        with running_server(create_app(platform)) as url:
            served = Served(url, platform, platform.new_admin_key)
            acme, other = served.tenant("acme"), served.tenant("other")
            _deploy(served, acme, folder, "qwen", ENGINE)
            with served.admin() as admin:
                body = {"name": "reader", "scopes": ["models:read"]}
                reader = admin.post(f"/v1/admin/organizations/{acme.org_id}/api_keys", json=body)
                assert reader.status_code == 201, reader.text
            yield Setup(url, acme.key, other.key, reader.json()["key"], folder)
    finally:
        platform.close()


def test_text_input_and_instructions_answer_as_the_chat_completion(setup: Setup) -> None:
    client = setup.client
    reply = client.responses.create(
        model="qwen",
        input="Hello there",
        instructions="Be brief.",
        max_output_tokens=8,
        temperature=0,
        metadata={"ticket": "42"},
    )
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    chat = client.chat.completions.create(model="qwen", messages=messages, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert reply.object == "response" and reply.id.startswith("resp_")
    assert reply.instructions == "Be brief." and reply.model == "qwen" and reply.metadata == {"ticket": "42"}
    item = reply.output[0]
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_")
    assert reply.output_text == chat.choices[0].message.content
    assert reply.usage is not None and chat.usage is not None
    assert reply.usage.input_tokens == setup.prompt_tokens(messages) == chat.usage.prompt_tokens
    assert reply.usage.output_tokens == chat.usage.completion_tokens
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens
    if chat.choices[0].finish_reason == "length":
        assert reply.status == "incomplete" and item.status == "incomplete"
        assert reply.incomplete_details is not None and reply.incomplete_details.reason == "max_output_tokens"
    else:
        assert reply.status == "completed" and reply.incomplete_details is None


def test_message_input_reaches_the_template(setup: Setup) -> None:
    items: Any = [
        {"role": "developer", "content": "Answer in French."},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "Hi, "}, {"type": "input_text", "text": "you"}],
        },
        {"role": "assistant", "content": "Bonjour."},
        {"type": "message", "role": "user", "content": "More?"},
    ]
    reply = setup.client.responses.create(model="qwen", input=items, max_output_tokens=2)
    expected = [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "Hi, you"},
        {"role": "assistant", "content": "Bonjour."},
        {"role": "user", "content": "More?"},
    ]
    assert reply.usage is not None and reply.usage.input_tokens == setup.prompt_tokens(expected)


def test_a_function_tool_round_trip(setup: Setup) -> None:
    client = setup.client
    ask: Any = [{"role": "user", "content": "Weather in Paris?"}]
    called = client.responses.create(
        model="qwen",
        input=ask,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=300,
        extra_body={"seed": 1},
    )
    calls = [item for item in called.output if item.type == "function_call"]
    assert calls and called.status == "completed"
    call = calls[0]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and call.id
    jsonschema_rs.validator_for(WEATHER["parameters"]).validate(json.loads(call.arguments))
    follow: Any = [
        *ask,
        *called.output,
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    answer = client.responses.create(model="qwen", input=follow, tools=[WEATHER], max_output_tokens=4)  # type: ignore[list-item]
    assert answer.status in ("completed", "incomplete")
    assert answer.usage is not None and called.usage is not None
    # The second prompt holds the call and its output: longer than the first by both.
    assert answer.usage.input_tokens > called.usage.input_tokens + 3


def test_text_format_json_schema_parses_and_validates(setup: Setup) -> None:
    reply = setup.client.responses.create(
        model="qwen",
        input="A city, as JSON",
        text={"format": {"type": "json_schema", "name": "city", "schema": CITY, "strict": True}},
        max_output_tokens=200,
        extra_body={"seed": 0},
    )
    assert reply.status == "completed", reply.output_text
    jsonschema_rs.validator_for(CITY).validate(json.loads(reply.output_text))
    assert (
        reply.text is not None and reply.text.format is not None and reply.text.format.type == "json_schema"
    )
    parsed = setup.client.responses.parse(
        model="qwen", input="A city", text_format=City, max_output_tokens=200, extra_body={"seed": 0}
    )
    assert parsed.status == "completed" and isinstance(parsed.output_parsed, City)
    plain = setup.client.responses.create(
        model="qwen", input="JSON", text={"format": {"type": "json_object"}}, max_output_tokens=80
    )
    if plain.status == "completed":
        assert isinstance(json.loads(plain.output_text), dict)


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool-call"])
def test_streamed_events_reassemble_to_the_whole_answer(setup: Setup, tools: bool) -> None:
    fields: Any = {"model": "qwen", "input": "Tell me about foxes", "temperature": 0, "max_output_tokens": 12}
    if tools:
        fields = {
            **fields,
            "tools": [WEATHER],
            "tool_choice": "required",
            "max_output_tokens": 300,
            "parallel_tool_calls": False,
        }
    whole = setup.client.responses.create(**fields)
    with setup.client.responses.stream(**fields) as stream:
        events = list(stream)
    # The SDK's final response is the last event's (get_final_response() takes a completed one only).
    streamed = events[-1].response  # type: ignore[union-attr]
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == ("response.incomplete" if whole.status == "incomplete" else "response.completed")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "response.output_item.added" in kinds and "response.output_item.done" in kinds
    if tools:
        assert (
            "response.function_call_arguments.delta" in kinds
            and "response.function_call_arguments.done" in kinds
        )
    else:
        assert {
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
        } <= set(kinds)

    def shape(reply: Any) -> list[tuple[Any, ...]]:
        return [
            (
                i.type,
                i.status,
                getattr(i, "name", None),
                getattr(i, "arguments", None),
                getattr(i, "content", None),
            )
            for i in reply.output
        ]

    assert streamed.output_text == whole.output_text and shape(streamed) == shape(whole)
    assert streamed.usage == whole.usage and streamed.status == whole.status
    assert setup.client.responses.retrieve(streamed.id).output_text == whole.output_text  # stored as well


def test_previous_response_id_continues_the_conversation(setup: Setup) -> None:
    client = setup.client
    first = client.responses.create(model="qwen", input="Hi", max_output_tokens=6, temperature=0)
    second = client.responses.create(
        model="qwen",
        input="And then?",
        previous_response_id=first.id,
        instructions="Be kind.",
        max_output_tokens=2,
    )
    conversation = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And then?"},
    ]
    assert second.previous_response_id == first.id
    assert second.usage is not None and second.usage.input_tokens == setup.prompt_tokens(conversation)
    # A third turn holds both earlier exchanges; the first turn's instructions are not carried.
    third = client.responses.create(
        model="qwen", input="Bye", previous_response_id=second.id, max_output_tokens=2
    )
    assert third.usage is not None
    assert third.usage.input_tokens == setup.prompt_tokens(
        [
            *conversation[1:],
            {"role": "assistant", "content": second.output_text},
            {"role": "user", "content": "Bye"},
        ]
    )
    assert client.responses.retrieve(first.id).output_text == first.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.create(model="qwen", input="x", previous_response_id=first.id, max_output_tokens=1)
    assert gone.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_another_organisations_response_is_not_found(setup: Setup) -> None:
    mine = setup.client.responses.create(model="qwen", input="Secret", max_output_tokens=1)
    with pytest.raises(openai.NotFoundError) as refused:
        setup.other.responses.create(
            model="qwen", input="x", previous_response_id=mine.id, max_output_tokens=1
        )
    assert refused.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        setup.other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        setup.other.responses.delete(mine.id)
    assert setup.client.responses.retrieve(mine.id).id == mine.id  # still there for its owner
    with pytest.raises(openai.PermissionDeniedError):  # a key of the same organisation without `inference`
        setup.reader.responses.retrieve(mine.id)


def test_store_false_keeps_nothing(setup: Setup) -> None:
    reply = setup.client.responses.create(model="qwen", input="Forget me", store=False, max_output_tokens=1)
    assert reply.store is False
    with pytest.raises(openai.NotFoundError):
        setup.client.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError):
        setup.client.responses.create(
            model="qwen", input="x", previous_response_id=reply.id, max_output_tokens=1
        )


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input.0"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input.0.message.content",
        ),
        ({"input": [{"role": "tool", "content": "x"}]}, "input.0.message.role"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "fly"}}, "tool_choice.name"),
        ({"tools": [WEATHER, WEATHER]}, "tools.1.name"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": 3}}}}, "text.format"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"frequency_penalty": 1}, "frequency_penalty"),
        ({"input": []}, "input"),
        (
            {
                "input": [
                    {"role": "user", "content": "x"},
                    {"type": "function_call_output", "call_id": "c", "output": "y"},
                ]
            },
            "input",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_parameter(setup: Setup, fields: dict[str, Any], param: str) -> None:
    body = {"model": "qwen", "input": "x", "max_output_tokens": 1, **fields}
    with pytest.raises(openai.BadRequestError) as refused:
        setup.client.post("/responses", body=body, cast_to=object)
    error: dict[str, Any] = refused.value.body  # type: ignore[assignment]
    assert error["param"] is not None and error["param"].startswith(param), error
    assert error["type"] == "invalid_request_error"
