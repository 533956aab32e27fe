"""Tool calling: tools and tool-call history rendered by the model's own chat template exactly as
transformers renders them (real Qwen2.5 and Llama 3.1 templates), native call text parsed back into
calls whatever way the text is cut into stream deltas, and every bad request refused naming the
parameter."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from openmaas.engine.outputs import CompletionResult, RequestOutput
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.testing import CHATML_TEMPLATE, build_tokenizer
from openmaas.engine.tokenizer import Tokenizer
from openmaas.errors import InvalidRequest
from openmaas.serving.completions import Generation, _CallStreams, _chat_response
from openmaas.serving.openai_types import ChatCompletionRequest
from openmaas.serving.tool_calls import Call, HermesCalls, Llama3JsonCalls
from openmaas.serving.tools import (
    ToolUse,
    call_grammar,
    parse,
    template_messages,
    tool_format,
    tool_use,
)
from tests.data.chat_templates import LLAMA31, QWEN25, use_template

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city — «today»",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": 'e.g. "Paris"'},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
        "strict": True,
    },
}
TOOLS = [WEATHER, ADD]
NAMES = frozenset({"get_weather", "add"})

# A conversation as an OpenAI client sends it: arguments as JSON text, content null beside calls.
OPENAI_HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    {"role": "assistant", "content": "21 °C."},
    {"role": "user", "content": "And 2+3?"},
]
# The same conversation as transformers' documentation writes it (arguments as objects).
TRANSFORMERS_HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
            }
        ],
    },
    {"role": "tool", "content": '{"temperature": 21}'},
    {"role": "assistant", "content": "21 °C."},
    {"role": "user", "content": "And 2+3?"},
]


@pytest.fixture(scope="module", params=["qwen2.5", "llama3.1"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp(request.param)
    build_tokenizer(path)
    if request.param == "qwen2.5":
        return use_template(path, QWEN25)
    return use_template(path, LLAMA31, bos_token="<|endoftext|>")


def _transformers(folder: Path, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    return str(
        reference.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    )


def _request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": OPENAI_HISTORY, **fields})


@pytest.mark.parametrize("with_history", [False, True])
def test_tools_render_as_transformers_renders_them(folder: Path, with_history: bool) -> None:
    ours = Tokenizer.from_pretrained(folder)
    body = _request(tools=TOOLS) if with_history else _request(tools=TOOLS, messages=OPENAI_HISTORY[:2])
    use = tool_use(body, ours.chat_template)
    assert use is not None and use.tools == TOOLS  # what the client sent, as it sent it
    prompt = ours.apply_chat_template(template_messages(body.messages), tools=use.tools)
    expected = _transformers(
        folder, TRANSFORMERS_HISTORY if with_history else TRANSFORMERS_HISTORY[:2], TOOLS
    )
    assert prompt == expected
    assert '"name": "get_weather"' in prompt and "«today»" in prompt  # tojson leaves non-ASCII alone
    if with_history:
        assert "21 °C." in prompt and "temperature" in prompt  # (Llama 3.1 quotes a tool's text as JSON)


def test_history_without_tools_renders_as_transformers(folder: Path) -> None:
    ours = Tokenizer.from_pretrained(folder)
    prompt = ours.apply_chat_template(template_messages(_request().messages))
    assert prompt == _transformers(folder, TRANSFORMERS_HISTORY, None)


def test_the_parser_is_chosen_from_the_template() -> None:
    assert tool_format(QWEN25) == "hermes"
    assert tool_format(LLAMA31) == "llama3_json"
    assert tool_format(CHATML_TEMPLATE) is None
    assert tool_format(None) is None


def _chunks(text: str, rng: random.Random) -> list[str]:
    cuts = (
        sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 8))))
        if len(text) > 1
        else []
    )
    return [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def _run(parser: HermesCalls | Llama3JsonCalls, parts: list[str]) -> tuple[str, list[Call]]:
    events = [e for part in parts for e in parser.feed(part)] + parser.finish()
    return "".join(e for e in events if isinstance(e, str)), [e for e in events if isinstance(e, Call)]


QWEN_CASES = [
    (  # one call, text before it kept as content
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "Let me check.",
        [Call("get_weather", '{"city": "Paris"}')],
    ),
    (  # parallel calls
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>',
        "",
        [Call("add", '{"a": 1, "b": 2}'), Call("get_weather", '{"city": "Zürich"}')],
    ),
    ("Just text, <tool_ but no call.", "Just text, <tool_ but no call.", []),
    (  # malformed JSON: content as written
        'x\n<tool_call>\n{"name": "add", "arguments": {"a": 1,}}\n</tool_call>',
        'x\n<tool_call>\n{"name": "add", "arguments": {"a": 1,}}\n</tool_call>',
        [],
    ),
    (  # a function that is not among the tools: content
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
        [],
    ),
    (  # cut off inside the call: content
        '<tool_call>\n{"name": "add", "arguments": {"a"',
        '<tool_call>\n{"name": "add", "arguments": {"a"',
        [],
    ),
    (  # the answer ended right after the JSON, before the closing tag: still a call
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}',
        "",
        [Call("add", '{"a": 1, "b": 2}')],
    ),
    ("trailing space  ", "trailing space  ", []),
    (  # nested deeper than Python's json recurses: content, not a crash
        '<tool_call>{"name": "add", "arguments": {"a": ' + "[" * 5000 + "]" * 5000 + "}}</tool_call>",
        '<tool_call>{"name": "add", "arguments": {"a": ' + "[" * 5000 + "]" * 5000 + "}}</tool_call>",
        [],
    ),
]


@pytest.mark.parametrize(("text", "content", "calls"), QWEN_CASES)
def test_qwen_calls_parse_the_same_however_the_stream_is_cut(
    text: str, content: str, calls: list[Call]
) -> None:
    assert _run(HermesCalls(NAMES, parallel=True), [text]) == (content, calls)
    rng = random.Random(text)
    for _ in range(100):
        assert _run(HermesCalls(NAMES, parallel=True), _chunks(text, rng)) == (content, calls)


LLAMA_CASES = [
    (
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        "",
        [Call("get_weather", '{"city": "Paris"}')],
    ),
    (
        '<|python_tag|>{"name": "add", "parameters": {"a": 1, "b": 2}}; '
        '{"name": "add", "parameters": {"a": 3, "b": 4}}',
        "",
        [Call("add", '{"a": 1, "b": 2}'), Call("add", '{"a": 3, "b": 4}')],
    ),
    ('{"answer": 42}', '{"answer": 42}', []),  # JSON that is not a call
    (  # cut off by max_tokens after a complete call: the call, and the rest as content
        '{"name": "add", "parameters": {"a": 1}}; {"name": "ad',
        '{"name": "ad',
        [Call("add", '{"a": 1}')],
    ),
    ('{"name": "add", "parameters": {"a": 1', '{"name": "add", "parameters": {"a": 1', []),
    ('It is {"name": "add"}', 'It is {"name": "add"}', []),  # a call must be the whole answer
    ("<|pyth", "<|pyth", []),
]


@pytest.mark.parametrize(("text", "content", "calls"), LLAMA_CASES)
def test_llama_calls_parse_the_same_however_the_stream_is_cut(
    text: str, content: str, calls: list[Call]
) -> None:
    assert _run(Llama3JsonCalls(NAMES, parallel=True), [text]) == (content, calls)
    rng = random.Random(text)
    for _ in range(100):
        assert _run(Llama3JsonCalls(NAMES, parallel=True), _chunks(text, rng)) == (content, calls)


def test_without_parallel_calls_only_the_first_call_is_kept() -> None:
    text = QWEN_CASES[1][0]
    assert _run(HermesCalls(NAMES, parallel=False), [text]) == ("", [Call("add", '{"a": 1, "b": 2}')])
    use = tool_use(_request(tools=TOOLS, parallel_tool_calls=False), QWEN25)
    assert use is not None and parse(use, text) == (None, [Call("add", '{"a": 1, "b": 2}')])


def test_a_named_choice_reads_only_calls_of_that_function() -> None:
    named = {"type": "function", "function": {"name": "add"}}
    use = tool_use(_request(tools=TOOLS, tool_choice=named), QWEN25)
    assert use is not None and use.forced and use.allowed == {"add"}
    weather = '<tool_call>{"name": "get_weather", "arguments": {"city": "x"}}</tool_call>'
    assert parse(use, weather) == (weather, [])


def test_tool_choice_none_renders_tools_but_reads_no_calls() -> None:
    use = tool_use(_request(tools=TOOLS, tool_choice="none"), CHATML_TEMPLATE)
    assert use is not None and use.tools == TOOLS and use.parse is None
    text = QWEN_CASES[0][0]
    assert parse(use, text) == (text, [])


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


BAD_REQUESTS = [
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "add"}}}, "tool_choice"),
    (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "sub"}}},
        "tool_choice.function.name",
    ),
    ({"tools": [WEATHER, WEATHER]}, "tools.1.function.name"),
    (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "properties": 3}},
                }
            ]
        },
        "tools.0.function.parameters",
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
        "tools.0.function.parameters",
    ),
    (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"$schema": "http://evil.example/s"}},
                }
            ]
        },
        "tools.0.function.parameters",
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": _nested(200)}}]},
        "tools.0.function.parameters",
    ),
    ({"messages": [{"role": "tool", "tool_call_id": "call_9", "content": "x"}]}, "messages.0.tool_call_id"),
    ({"messages": [*OPENAI_HISTORY[:3], {"role": "tool", "content": "x"}]}, "messages.3.tool_call_id"),
    (
        {"messages": [*OPENAI_HISTORY[:3], {"role": "tool", "tool_call_id": "call_2", "content": "x"}]},
        "messages.3.tool_call_id",
    ),
    ({"messages": [{"role": "user", "content": "x", "tool_call_id": "call_1"}]}, "messages.0.tool_call_id"),
    (
        {"messages": [{"role": "user", "content": "x", "tool_calls": OPENAI_HISTORY[2]["tool_calls"]}]},
        "messages.0.tool_calls",
    ),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "add", "arguments": "[1]"}}
                    ],
                }
            ]
        },
        "messages.0.tool_calls.0.function.arguments",
    ),
]


@pytest.mark.parametrize(("fields", "param"), BAD_REQUESTS)
def test_bad_tool_requests_name_the_parameter(fields: dict[str, Any], param: str) -> None:
    body = _request(**fields)
    with pytest.raises(InvalidRequest) as refused:
        tool_use(body, QWEN25)
        template_messages(body.messages)
    assert refused.value.param == param


def test_tools_for_a_model_without_a_tool_format_are_refused() -> None:
    with pytest.raises(InvalidRequest) as refused:
        tool_use(_request(tools=TOOLS), CHATML_TEMPLATE)
    assert refused.value.param == "tools" and refused.value.code == "tools_not_supported"


def test_arguments_in_history_reach_the_template_as_objects() -> None:
    messages = template_messages(_request().messages)
    call = messages[2]["tool_calls"][0]
    assert call["function"]["arguments"] == {"city": "Paris", "unit": "celsius"}
    assert messages[2]["content"] is None and messages[3]["tool_call_id"] == "call_1"
    assert json.dumps(messages[4]) == json.dumps({"role": "assistant", "content": "21 °C."})


# ---------------------------------------------------------------------------------------------
# Streamed answers, as the openai SDK reassembles them


def _generation(use: ToolUse, n: int = 1) -> Generation:
    runtime: Any = SimpleNamespace(tokenizer=None)
    params = SamplingParams(max_tokens=64, n=n)
    return Generation(runtime, "m", "chatcmpl-1", [1, 2, 3], params, 0, use)


def _outputs(text: str, rng: random.Random, finish: str, index: int = 0) -> list[RequestOutput]:
    parts = _chunks(text, rng) or [""]
    outs, so_far = [], ""
    for k, part in enumerate(parts):
        so_far += part
        last = k == len(parts) - 1
        reason: Any = finish if last else None
        outs.append(RequestOutput("r", index, [7], part, so_far, None, reason, 3, k + 1))
    return outs


@pytest.mark.parametrize("template", [QWEN25, LLAMA31])
def test_streamed_calls_reassembled_by_the_sdk_equal_the_whole_answer(template: str) -> None:
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    use = tool_use(_request(tools=TOOLS), template)
    assert use is not None
    texts = [case[0] for case in QWEN_CASES] if template == QWEN25 else [case[0] for case in LLAMA_CASES]
    rng = random.Random(7)
    for text in [*texts, ""]:
        gen = _generation(use)
        whole = _chat_response(gen, [_result(text, "stop")])
        state = ChatCompletionStreamState(input_tools=TOOLS)  # type: ignore[arg-type]
        head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        opening = {"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}
        state.handle_chunk(ChatCompletionChunk.model_validate({**head, "choices": [opening]}))
        streams = _CallStreams(gen)
        for out in _outputs(text, rng, "stop"):
            for choice in streams.chunks(out):
                if "tool_calls" in choice["delta"]:  # OpenAI's exact shape
                    (delta,) = choice["delta"]["tool_calls"]
                    assert set(delta) in ({"index", "id", "type", "function"}, {"index", "function"})
                    assert delta["function"]["arguments"] == "" or "id" not in delta
                state.handle_chunk(ChatCompletionChunk.model_validate({**head, "choices": [choice]}))
        final = state.get_final_completion().choices[0]
        expected = whole["choices"][0]
        assert final.finish_reason == expected["finish_reason"]
        assert final.message.content == expected["message"]["content"]
        calls = [(c.function.name, c.function.arguments) for c in final.message.tool_calls or []]
        want = [
            (c["function"]["name"], c["function"]["arguments"])
            for c in expected["message"].get("tool_calls", [])
        ]
        assert calls == want
        assert all(c.id.startswith("call_") for c in final.message.tool_calls or [])
        if want:
            assert final.finish_reason == "tool_calls"
            json.loads(calls[0][1])


def _result(text: str, finish: Any) -> CompletionResult:
    return CompletionResult("r", 0, [7] * 3, text, None, finish, 3)


def test_a_call_cut_off_by_max_tokens_is_content_and_says_length() -> None:
    use = tool_use(_request(tools=TOOLS), QWEN25)
    assert use is not None
    text = QWEN_CASES[0][0] + '\n<tool_call>\n{"name": "add", "argu'
    answer = _chat_response(_generation(use), [_result(text, "length")])["choices"][0]
    assert answer["finish_reason"] == "length"
    assert [c["function"]["name"] for c in answer["message"]["tool_calls"]] == ["get_weather"]
    # (the whitespace after a call separates it from what follows: dropped)
    assert answer["message"]["content"] == 'Let me check.<tool_call>\n{"name": "add", "argu'


# ---------------------------------------------------------------------------------------------
# The grammar of forced calls


@pytest.mark.parametrize("added", [False, True], ids=["spelled", "added-token"])
@pytest.mark.parametrize("template", [QWEN25, LLAMA31], ids=["qwen", "llama"])
def test_the_forced_call_grammar_takes_the_native_format_and_nothing_else(
    tmp_path: Path, template: str, added: bool
) -> None:
    """The grammar accepts the model's native call format, token by token, with Qwen's markers as
    the single added tokens its vocabulary holds (llguidance treats added tokens as special)."""
    llguidance = pytest.importorskip("llguidance")
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer

    build_tokenizer(tmp_path)
    if added:
        hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
        hf.add_tokens(
            [AddedToken(t, special=False, normalized=False) for t in ("<tool_call>", "</tool_call>")]
        )
        hf.save(str(tmp_path / "tokenizer.json"))
    tokenizer = Tokenizer.from_pretrained(tmp_path)
    ll_tokenizer = llguidance.LLTokenizer(
        (tmp_path / "tokenizer.json").read_text(), n_vocab=tokenizer.vocab_size, eos_token=[2]
    )
    use = tool_use(_request(tools=TOOLS, tool_choice="required"), template)
    assert use is not None
    grammar = llguidance.LLMatcher.grammar_from_lark(call_grammar(use, tokenizer.token_id))
    if template == QWEN25:
        one = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
        two = one + '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        wrong = '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>'  # b is required
    else:
        one = '{"name": "add", "parameters": {"a": 1, "b": 2}}'
        two = one + '; {"name": "get_weather", "parameters": {"city": "Paris"}}'
        wrong = '{"name": "sub", "parameters": {"a": 1, "b": 2}}'
    for text, fits in ((one, True), (two, True), (wrong, False), ("Sure! " + one, False)):
        matcher = llguidance.LLMatcher(ll_tokenizer, grammar, log_level=0)
        ids = tokenizer.encode(text, add_special_tokens=False)
        if added and template == QWEN25:
            assert tokenizer.token_id("<tool_call>") in ids
        assert (matcher.consume_tokens(ids) and matcher.is_accepting()) is fits, text
