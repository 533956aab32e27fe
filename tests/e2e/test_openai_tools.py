"""Tool calling through the official `openai` SDK, unchanged, against a real server serving tiny
random-weight Qwen2 and Llama models that carry the real Qwen2.5 and Llama 3.1 chat templates: the
tools reach the model through its template, bad requests are refused naming the parameter, and
with `tool_choice` "required" or a named function every answer is a valid call whose arguments
validate against the function's schema — whole, or streamed and reassembled by the SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import openai
import pytest

from openmaas.api.app import create_app
from openmaas.engine.testing import build_tiny_model
from openmaas.engine.tokenizer import Tokenizer
from openmaas.serving.openai_types import ChatCompletionRequest
from openmaas.serving.tools import template_messages, tool_use
from tests.data.chat_templates import LLAMA31, QWEN25, use_template
from tests.e2e.test_openai_sdk import _deploy
from tests.support.platforms import make_platform
from tests.support.served import Served
from tests.support.server import running_server

ENGINE = {"kv_cache_memory_bytes": 32 * 1024 * 1024, "max_num_seqs": 8, "max_model_len": 4096}
WEATHER = {
    "type": "function",
    "function": {
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
    },
}
BOOK = {
    "type": "function",
    "function": {
        "name": "book_table",
        "parameters": {
            "type": "object",
            "properties": {
                "party": {
                    "type": "object",
                    "properties": {"adults": {"enum": [1, 2, 3]}},
                    "required": ["adults"],
                    "additionalProperties": False,  # (else a random model may write keys forever)
                },
                "tags": {"type": "array", "items": {"enum": ["quiet", "window"]}, "maxItems": 2},
                "vegan": {"type": "boolean"},
                "when": {"anyOf": [{"enum": ["lunch", "dinner"]}, {"type": "null"}]},
            },
            "required": ["party", "vegan", "when"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, BOOK]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}  # type: ignore[index]
ASK = [{"role": "user", "content": "Weather in Paris, please."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, dict[str, Path]]]:
    """One server for the module, with `qwen` and `llama` deployed (building them is most of the cost)."""
    root = tmp_path_factory.mktemp("tools")
    platform = make_platform(root / "home", f"sqlite:///{root / 'openmaas.db'}")
    folders = {
        "qwen": use_template(build_tiny_model(root / "qwen", "qwen2", max_position_embeddings=4096), QWEN25),
        "llama": use_template(
            build_tiny_model(root / "llama", "llama", max_position_embeddings=4096), LLAMA31, "<|endoftext|>"
        ),
    }
    try:
        assert platform.new_admin_key is not None
        with running_server(create_app(platform)) as url:
            served = Served(url, platform, platform.new_admin_key)
            tenant = served.tenant("acme")
            for name, folder in folders.items():
                _deploy(served, tenant, folder, name, ENGINE)
            yield url, tenant.key, folders
    finally:
        platform.close()


@pytest.fixture(scope="module")
def client(server: tuple[str, str, dict[str, Path]]) -> openai.OpenAI:
    url, key, _ = server
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("model", ["qwen", "llama"])
def test_the_tools_reach_the_model_through_its_template(
    client: openai.OpenAI, server: tuple[str, str, dict[str, Path]], model: str
) -> None:
    tokenizer = Tokenizer.from_pretrained(server[2][model])
    body = ChatCompletionRequest.model_validate({"model": model, "messages": ASK, "tools": TOOLS})
    use = tool_use(body, tokenizer.chat_template)
    assert use is not None
    expected = len(tokenizer.encode_chat(template_messages(body.messages), tools=use.tools))
    assert expected > len(tokenizer.encode_chat(template_messages(body.messages))) + 50
    for choice in ("auto", "none"):  # "none" still shows the model its tools, as OpenAI does
        reply = client.chat.completions.create(
            model=model,
            messages=ASK,
            tools=TOOLS,
            tool_choice=choice,
            max_tokens=4,
            seed=1,  # type: ignore[arg-type]
        )
        assert reply.usage is not None and reply.usage.prompt_tokens == expected
    plain = client.chat.completions.create(
        model=model, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=8
    )
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].finish_reason in (
        "stop",
        "length",
    )


def _bad(client: openai.OpenAI, **fields: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**{"model": "qwen", "messages": ASK, "max_tokens": 2, **fields})
    body: dict[str, Any] = refused.value.body  # type: ignore[assignment]
    return body


CALLED = [
    {"role": "user", "content": "Weather?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ],
    },
]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "fly"}}},
            "tool_choice.function.name",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools.1.function.name"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools.0.function.name"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "object", "required": 1}},
                    }
                ]
            },
            "tools.0.function.parameters",
        ),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"messages": [*CALLED, {"role": "tool", "tool_call_id": "call_b", "content": "sunny"}]},
            "messages.2.tool_call_id",
        ),
        ({"messages": [*CALLED, {"role": "tool", "content": "sunny"}]}, "messages.2.tool_call_id"),
    ],
)
def test_bad_tool_requests_are_400_naming_the_parameter(
    client: openai.OpenAI, fields: dict[str, Any], param: str
) -> None:
    assert _bad(client, **fields)["param"] == param


def _check_call(call: Any, allowed: set[str]) -> dict[str, Any]:
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in allowed
    arguments: dict[str, Any] = json.loads(call.function.arguments)
    jsonschema_rs.validator_for(SCHEMAS[call.function.name]).validate(arguments)  # raises if not
    return arguments


NAMED = {"type": "function", "function": {"name": "book_table"}}


@pytest.mark.parametrize("model", ["qwen", "llama"])
@pytest.mark.parametrize("choice", ["required", NAMED], ids=["required", "named"])
def test_forced_calls_are_always_valid_calls_from_random_weights(
    client: openai.OpenAI, model: str, choice: Any
) -> None:
    allowed = {"book_table"} if choice is NAMED else set(SCHEMAS)
    for seed in range(4):
        reply = client.chat.completions.create(
            model=model,
            messages=ASK,
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice=choice,
            parallel_tool_calls=False,
            seed=seed,
            temperature=1.0,
            max_tokens=300,
        )
        answer = reply.choices[0]
        assert answer.finish_reason == "tool_calls", answer
        assert answer.message.content is None
        (call,) = answer.message.tool_calls or []
        _check_call(call, allowed)


@pytest.mark.parametrize("model", ["qwen", "llama"])
@pytest.mark.parametrize("parallel", [False, True], ids=["one", "parallel"])
def test_forced_calls_streamed_and_reassembled_by_the_sdk_equal_the_whole_answer(
    client: openai.OpenAI, model: str, parallel: bool
) -> None:
    for seed in (11, 12):
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": ASK,
            "tools": TOOLS,
            "tool_choice": "required",
            "parallel_tool_calls": parallel,
            "seed": seed,
            "temperature": 1.0,
            "max_tokens": 160,
        }
        whole = client.chat.completions.create(**kwargs).choices[0]
        with client.chat.completions.stream(**kwargs) as stream:
            done = [(e.name, e.arguments) for e in stream if e.type == "tool_calls.function.arguments.done"]
            # (A random model may chain parallel calls up to max_tokens; the SDK parses only
            # answers that did not end with "length", so read its snapshot then.)
            snapshot = stream.current_completion_snapshot.choices[0]
            streamed = (
                stream.get_final_completion().choices[0] if whole.finish_reason != "length" else snapshot
            )
        assert streamed.finish_reason == whole.finish_reason
        assert streamed.message.content == whole.message.content
        calls = [(c.function.name, c.function.arguments) for c in whole.message.tool_calls or []]
        assert [(c.function.name, c.function.arguments) for c in streamed.message.tool_calls or []] == calls
        assert done == calls and calls  # a forced answer holds a complete call, even when cut short
        assert parallel or whole.finish_reason == "tool_calls"
        for call in whole.message.tool_calls or []:
            _check_call(call, set(SCHEMAS))


def test_the_answer_goes_back_into_the_history_as_the_sdk_returns_it(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="qwen", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, seed=3
    )
    message = reply.choices[0].message
    (call,) = message.tool_calls or []
    history: list[Any] = [*ASK, message, {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    follow = client.chat.completions.create(model="qwen", messages=history, tools=TOOLS, max_tokens=4)
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # Llama 3.1's template takes one call per assistant message, and says so: a 400 naming messages.
    two = [*CALLED[:1], {**CALLED[1], "tool_calls": CALLED[1]["tool_calls"] * 2}]  # type: ignore[operator]
    two[1]["tool_calls"] = [{**c, "id": f"call_{i}"} for i, c in enumerate(two[1]["tool_calls"])]
    assert _bad(client, model="llama", messages=two, tools=TOOLS)["param"] == "messages"


@pytest.mark.parametrize("model", ["qwen", "llama"])
def test_auto_answers_stream_as_they_come_whole(client: openai.OpenAI, model: str) -> None:
    """With tools and tool_choice auto, text that might begin a call is held back, never lost: the
    SDK's reassembled stream is the whole answer (a random model answers in text)."""
    for seed in (5, 6):
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": ASK,
            "tools": TOOLS,
            "seed": seed,
            "max_tokens": 24,
        }
        whole = client.chat.completions.create(**kwargs).choices[0]
        with client.chat.completions.stream(**kwargs) as stream:
            for _ in stream:
                pass
            snapshot = stream.current_completion_snapshot.choices[0]
        assert snapshot.message.content == whole.message.content and whole.message.content
        assert snapshot.finish_reason == whole.finish_reason
