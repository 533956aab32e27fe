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

Parsing is one incremental state machine per format (`CallStream`), fed the text as the engine
produces it; a whole answer is the same machine fed once, so a stream reassembled by the client is
the non-streamed answer by construction. Text that might begin a call is held back until it is
known not to be one; a call is emitted only once it is complete and valid (its arguments then come
as one fragment): a call that turns out malformed is never half-sent, its text becomes content.

Requests without tools never reach this module's parsers: they cost nothing new.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

import jsonschema_rs
import llguidance

from openmaas import errors
from openmaas.serving.openai_types import ChatCompletionRequest, ChatMessage, NamedToolChoice

ToolFormat = Literal["hermes", "llama3_json"]

HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
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


MAX_SCHEMA_DEPTH = 64


def _depth(value: Any) -> int:
    deepest, level = 0, [value]
    while level:
        deepest += 1
        if deepest > MAX_SCHEMA_DEPTH:
            break
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node if isinstance(node, list) else ())
        ]
    return deepest


def _check_schema(schema: dict[str, Any], param: str) -> None:
    # Rendering (tojson) and the grammar recurse through the schema: bounded here, a 400 not a 500.
    if _depth(schema) > MAX_SCHEMA_DEPTH:
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
    if not isinstance(arguments, dict) or _depth(arguments) > MAX_SCHEMA_DEPTH:
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


@dataclass(frozen=True)
class Call:
    name: str
    arguments: str  # a JSON object, as text


Event = str | Call  # content text, or a complete call


class CallStream(Protocol):
    def feed(self, text: str) -> list[Event]: ...

    def finish(self) -> list[Event]: ...


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


def _call(value: Any, allowed: frozenset[str], arguments_key: str) -> Call | None:
    """A call if `value` is `{"name": <allowed>, <arguments_key>: {…}}`, else None."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    if value["name"] not in allowed or not set(value) <= {"name", arguments_key}:
        return None
    arguments = value.get(arguments_key, {})
    if not isinstance(arguments, dict):
        return None
    return Call(value["name"], json.dumps(arguments, ensure_ascii=False))


def _held_suffix(text: str, marker: str) -> int:
    """Where the tail that could still grow into `marker` (after any whitespace) begins."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-k:]):
            end = len(text) - k
            break
    else:
        end = len(text)
    return len(text[:end].rstrip())


class HermesCalls:
    """`<tool_call>{…}</tool_call>` blocks anywhere in the answer. Whitespace next to a valid call
    is dropped (it separates the call from the text); a block that is not a valid call of an allowed
    function stays in the content as written. Without parallel calls, valid calls after the first
    are dropped."""

    def __init__(self, allowed: frozenset[str], parallel: bool) -> None:
        self.allowed = allowed
        self.parallel = parallel
        self.calls = 0
        self._pending = ""  # text not yet emitted
        self._inside = False  # `_pending` is a block: whitespace, then `<tool_call>`, then its body
        self._after_call = False  # drop whitespace until the next text

    def feed(self, text: str) -> list[Event]:
        self._pending += text
        events: list[Event] = []
        while True:
            if self._after_call:
                self._pending = self._pending.lstrip()
                if not self._pending:
                    return events  # still only whitespace since the call
                self._after_call = False
            if self._inside:
                close = self._pending.find(HERMES_CLOSE)
                if close < 0:
                    return events
                end = close + len(HERMES_CLOSE)
                block, self._pending = self._pending[:end], self._pending[end:]
                self._inside = False
                self._close(block, events)
                continue
            start = self._pending.find(HERMES_OPEN)
            if start < 0:
                cut = _held_suffix(self._pending, HERMES_OPEN)
                if cut:
                    events.append(self._pending[:cut])
                    self._pending = self._pending[cut:]
                return events
            text_end = len(self._pending[:start].rstrip())
            if text_end:
                events.append(self._pending[:text_end])
            self._pending = self._pending[text_end:]
            self._inside = True

    def finish(self) -> list[Event]:
        events: list[Event] = []
        if self._inside:  # the answer ended inside a block: a call if what follows is one
            self._close(self._pending, events)
        elif self._pending:
            events.append(self._pending)
        self._pending = ""
        self._inside = False
        return events

    def _close(self, block: str, events: list[Event]) -> None:
        body = block.strip()[len(HERMES_OPEN) :]
        if body.endswith(HERMES_CLOSE):
            body = body[: -len(HERMES_CLOSE)]
        try:
            call = _call(json.loads(body), self.allowed, "arguments")
        except (ValueError, RecursionError):  # (a model can nest deeper than json recurses)
            call = None
        if call is None:
            events.append(block)
            return
        self._after_call = True
        if self.calls and not self.parallel:
            return
        self.calls += 1
        events.append(call)


class Llama3JsonCalls:
    """Llama 3's JSON calls: an answer that begins with calls (`{"name", "parameters"}` objects,
    `;` between them, optionally after `<|python_tag|>`) is those calls, then any rest as content;
    otherwise it is content. An answer that begins like a call (`{` or the tag) is held to its
    end, where it is parsed whole."""

    def __init__(self, allowed: frozenset[str], parallel: bool) -> None:
        self.allowed = allowed
        self.parallel = parallel
        self._held = ""
        self._mode: Literal["undecided", "text", "call"] = "undecided"

    def feed(self, text: str) -> list[Event]:
        if self._mode == "text":
            return [text] if text else []
        self._held += text
        if self._mode == "call":
            return []
        head = self._held.lstrip()
        if len(head) < len(PYTHON_TAG) and PYTHON_TAG.startswith(head):
            return []  # whitespace, or maybe the start of the tag
        if head.startswith(("{", PYTHON_TAG)):
            self._mode = "call"
            return []
        self._mode = "text"
        held, self._held = self._held, ""
        return [held]

    def finish(self) -> list[Event]:
        held, self._held = self._held, ""
        if not held:
            return []
        if self._mode != "call":
            return [held]
        calls, rest = self._calls(held)
        if not calls:
            return [held]
        events: list[Event] = list(calls if self.parallel else calls[:1])
        return [*events, rest] if rest else events

    def _calls(self, text: str) -> tuple[list[Call], str]:
        """The calls the answer begins with, and what follows them (an answer cut short by
        max_tokens keeps its complete calls; the rest is content)."""
        body = text.strip()
        if body.startswith(PYTHON_TAG):
            body = body[len(PYTHON_TAG) :].lstrip()
        decoder = json.JSONDecoder()
        calls: list[Call] = []
        at = 0
        while True:
            try:
                value, end = decoder.raw_decode(body, at)
                call = _call(value, self.allowed, "parameters") or _call(value, self.allowed, "arguments")
            except (ValueError, RecursionError):
                return calls, body[at:]
            if call is None:
                return calls, body[at:]
            calls.append(call)
            rest = body[end:].lstrip()
            if not rest.startswith(";"):
                return calls, rest
            at = len(body) - len(rest) + 1
            while at < len(body) and body[at].isspace():
                at += 1
