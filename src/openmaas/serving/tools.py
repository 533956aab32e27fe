"""Tool calling on chat completions: the request's tools checked, handed to the model through its
own chat template, and the model's native call text parsed back into OpenAI `tool_calls`, whole or
streamed.

Which native format a model writes is read from its chat template (`tool_format`), the one place
that knows what the model was taught:
- a template that writes `<tool_call>` (Qwen2.5, Hermes-style models) → `hermes`: calls are
  `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>` blocks, as many as the model writes,
  and the text outside them is the message's content;
- a template with Llama 3's headers that asks for `"parameters"` (Llama 3.1, 3.2, 3.3) →
  `llama3_json`: an answer that begins with a call `{"name": …, "parameters": {…}}` (optionally
  after `<|python_tag|>`; several are separated by `;`) is calls, anything after them content;
  any other answer is content;
- any other template: no format, and a request that lets the model call (`auto`, `required`, a
  named function) is refused with 400 `tools`.

Reading calls back is serving/tool_calls.py: one incremental state machine per format, so a stream
reassembled by the client is the non-streamed answer by construction.

Requests without tools never reach this module's parsers: they cost nothing new.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import jsonschema_rs
import llguidance

from openmaas import errors
from openmaas.serving.openai_types import ChatCompletionRequest, ChatMessage, NamedToolChoice
from openmaas.serving.tool_calls import (
    HERMES_CLOSE,
    HERMES_OPEN,
    MAX_SCHEMA_DEPTH,
    Call,
    CallStream,
    HermesCalls,
    Llama3JsonCalls,
    json_depth,
)

ToolFormat = Literal["hermes", "llama3_json"]

# The drafts a tool's schema may name in `$schema`: any other URI would be fetched to check it.
_KNOWN_DRAFTS = re.compile(r"^https?://json-schema\.org/(draft-0[4-7]|draft/2019-09|draft/2020-12)/schema#?$")


@lru_cache(maxsize=64)
def tool_format(chat_template: str | None) -> ToolFormat | None:
    """The native call format a chat template teaches its model, or None when it teaches none."""
    if not chat_template or "tools" not in chat_template:
        return None
    if HERMES_OPEN in chat_template:
        return "hermes"
    if "<|start_header_id|>" in chat_template and '"parameters"' in chat_template:
        return "llama3_json"
    return None


# ---------------------------------------------------------------------------------------------
# The request


@dataclass(frozen=True)
class ToolUse:
    """What a chat request with tools asks: the tools as the template sees them, and how calls are
    read back. `parse` is None for `tool_choice: "none"` (the model answers in text only)."""

    tools: list[dict[str, Any]]
    parse: ToolFormat | None
    allowed: frozenset[str]  # the functions a call may name
    names: tuple[str, ...]  # the same, in the order of the request's tools
    parallel: bool
    forced: bool  # `required` or a named function: the answer must be a call
    schemas: dict[str, dict[str, Any]]  # each function's arguments schema


def tool_use(body: ChatCompletionRequest, chat_template: str | None) -> ToolUse | None:
    """Check a request's tools and tool choice (400 naming the parameter); None without tools."""
    choice = body.tool_choice
    if body.tools is None:
        if choice is not None and choice != "none":
            raise _invalid("tool_choice is only allowed when tools are given.", "tool_choice")
        return None
    names: dict[str, int] = {}
    schemas: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(body.tools):
        name = tool.function.name
        if name in names:
            raise _invalid(
                f"Duplicate function name {name!r} (also tools.{names[name]}).", f"tools.{i}.function.name"
            )
        names[name] = i
        parameters = tool.function.parameters
        if parameters is not None:
            _check_schema(parameters, f"tools.{i}.function.parameters")
        schemas[name] = parameters if parameters is not None else {"type": "object", "properties": {}}
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            raise _invalid(
                f"tool_choice names {choice.function.name!r}, which is not among the tools.",
                "tool_choice.function.name",
            )
        ordered: tuple[str, ...] = (choice.function.name,)
    else:
        ordered = tuple(names)
    allowed = frozenset(ordered)
    tools = [tool.model_dump(exclude_unset=True) for tool in body.tools]
    if choice == "none":
        return ToolUse(tools, None, allowed, ordered, False, False, schemas)
    fmt = tool_format(chat_template)
    if fmt is None:
        raise errors.InvalidRequest(
            f"Model {body.model!r} has no tool-calling chat template: its answers cannot be read as "
            'calls (tool_choice "none" still renders the tools).',
            param="tools",
            code="tools_not_supported",
        )
    forced = choice == "required" or isinstance(choice, NamedToolChoice)
    parallel = body.parallel_tool_calls is not False
    use = ToolUse(tools, fmt, allowed, ordered, parallel, forced, schemas)
    if forced:  # each schema the grammar embeds must compile: refused now, naming the tool
        key = "arguments" if fmt == "hermes" else "parameters"
        for name in ordered:
            problem = _grammar_problem(f"start: %json {_call_schema(name, key, schemas[name])}\n")
            if problem:
                detail = " ".join(line.strip() for line in problem.strip().splitlines())[:300]
                message = f"Not supported for a forced call: {detail}"
                raise _invalid(message, f"tools.{names[name]}.function.parameters")
    return use


@lru_cache(maxsize=256)
def _grammar_problem(lark: str) -> str:
    """llguidance's complaint about a grammar, "" if none (about 2 ms a schema: cached, as agents
    send the same tools with every turn)."""
    return str(llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_lark(lark)))


def _check_schema(schema: dict[str, Any], param: str) -> None:
    # Rendering (tojson) and the grammar recurse through the schema: bounded here, a 400 not a 500.
    if json_depth(schema) > MAX_SCHEMA_DEPTH:
        raise _invalid(f"The parameters schema nests deeper than {MAX_SCHEMA_DEPTH} levels.", param)
    declared = schema.get("$schema")
    if declared is not None and not (isinstance(declared, str) and _KNOWN_DRAFTS.match(declared)):
        raise _invalid("$schema must name a JSON Schema draft (draft-04 to 2020-12).", param)
    if "type" in schema and schema["type"] != "object":
        raise _invalid("The parameters schema must describe an object (type: object).", param)
    try:
        jsonschema_rs.meta.validate(schema)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid"
        raise _invalid(f"Invalid JSON Schema: {first}", param) from None


def template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The messages as chat templates read them (transformers' conventions): an assistant's
    `tool_calls` with their `arguments` as objects, tool messages with their `tool_call_id`.
    Checks what the schema cannot: calls only on assistant messages, every tool message answering
    an earlier call, arguments that are JSON objects."""
    called: set[str] = set()
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        entry: dict[str, Any] = {"role": m.role, "content": m.text()}
        if m.name:
            entry["name"] = m.name
        if m.tool_calls is not None:
            if m.role != "assistant":
                raise _invalid("Only assistant messages carry tool_calls.", f"messages.{i}.tool_calls")
            if m.tool_calls:
                if m.content is None:
                    entry["content"] = None
                entry["tool_calls"] = [_history_call(call, i, j) for j, call in enumerate(m.tool_calls)]
                called.update(call.id for call in m.tool_calls)
        if m.role == "tool":
            if m.tool_call_id is None:
                raise errors.InvalidRequest(
                    "A tool message needs the tool_call_id of the call it answers.",
                    param=f"messages.{i}.tool_call_id",
                    code="missing_field",
                )
            if m.tool_call_id not in called:
                raise _invalid(
                    f"tool_call_id {m.tool_call_id!r} answers no tool call of an earlier assistant message.",
                    f"messages.{i}.tool_call_id",
                )
            entry["tool_call_id"] = m.tool_call_id
        elif m.tool_call_id is not None:
            raise _invalid("Only tool messages carry a tool_call_id.", f"messages.{i}.tool_call_id")
        out.append(entry)
    return out


def _history_call(call: Any, i: int, j: int) -> dict[str, Any]:
    try:
        arguments = json.loads(call.function.arguments)
    except (ValueError, RecursionError):
        arguments = None
    if not isinstance(arguments, dict) or json_depth(arguments) > MAX_SCHEMA_DEPTH:
        raise _invalid(
            f"arguments must be a JSON object (nested at most {MAX_SCHEMA_DEPTH} levels) in a string.",
            f"messages.{i}.tool_calls.{j}.function.arguments",
        )
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": arguments},
    }


def call_grammar(use: ToolUse, token_id: Callable[[str], int | None]) -> str:
    """For `required` or a named function: a Lark grammar (llguidance's dialect, each function's
    call a `%json` schema) of one call — or several, with parallel calls — in the model's native
    format, so the answer is always a valid call of an allowed function whose arguments validate.
    JSON is written as the templates write it (`", "` and `": "`, no other whitespace), which also
    keeps a model from padding forever. A marker the vocabulary holds as one token (Qwen's
    `<tool_call>` is an added token; `token_id` finds it) is that token, as the model was taught."""
    assert use.parse is not None
    key = "arguments" if use.parse == "hermes" else "parameters"
    rules = [
        f"fn_{i}: %json {_call_schema(name, key, use.schemas[name])}" for i, name in enumerate(use.names)
    ]
    one = " | ".join(f"fn_{i}" for i in range(len(use.names)))
    if use.parse == "hermes":
        opening, closing = _marker(HERMES_OPEN, token_id), _marker(HERMES_CLOSE, token_id)
        call = f'call: {opening} "\\n" ({one}) "\\n" {closing}'
        start = 'start: call ("\\n" call)*' if use.parallel else "start: call"
    else:
        call = f"call: {one}"
        start = 'start: call ("; " call)*' if use.parallel else "start: call"
    return "\n".join([start, call, *rules]) + "\n"


_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _call_schema(name: str, key: str, parameters: dict[str, Any]) -> str:
    arguments = {k: v for k, v in parameters.items() if k not in ("$schema", "$defs", "definitions")}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"name": {"const": name}, key: arguments},
        "required": ["name", key],
        "additionalProperties": False,
        "x-guidance": _JSON_STYLE,
    }
    for defs in ("$defs", "definitions"):  # `#/$defs/…` references resolve from the root
        if defs in parameters:
            schema[defs] = parameters[defs]
    return json.dumps(schema, ensure_ascii=False)


def _marker(text: str, token_id: Callable[[str], int | None]) -> str:
    """`text` in Lark: its token (`<[id]>`) when the vocabulary holds it whole, else the literal."""
    single = token_id(text)
    return f"<[{single}]>" if single is not None else json.dumps(text)


def _invalid(message: str, param: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(message, param=param, code="invalid_value")


# ---------------------------------------------------------------------------------------------
# The answer


def call_stream(use: ToolUse) -> CallStream | None:
    if use.parse == "hermes":
        return HermesCalls(use.allowed, use.parallel)
    if use.parse == "llama3_json":
        return Llama3JsonCalls(use.allowed, use.parallel)
    return None


def parse(use: ToolUse, text: str) -> tuple[str | None, list[Call]]:
    """A whole answer's content (None when it is calls only) and calls."""
    stream = call_stream(use)
    if stream is None:
        return text, []
    events = stream.feed(text) + stream.finish()
    calls = [e for e in events if isinstance(e, Call)]
    content = "".join(e for e in events if isinstance(e, str))
    return (content if content or not calls else None), calls
