"""The model's native tool-call text read back as calls, incrementally: one state machine per format
(serving/tools.py says which format a model writes and why), fed the text as the engine produces it.

A whole answer is the same machine fed once, so a streamed answer reassembled by a client equals the
non-streamed one by construction. Text that might begin a call is held back until it is known not to
be one; a call is emitted only once complete and valid, so a call that turns out malformed is never
half-sent: its text is content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol

HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"


@dataclass(frozen=True)
class Call:
    name: str
    arguments: str  # a JSON object, as text


Event = str | Call  # content text, or a complete call


class CallStream(Protocol):
    def feed(self, text: str) -> list[Event]: ...

    def finish(self) -> list[Event]: ...


# Deepest nesting of a tool's schema or a call's arguments: deeper ones are refused in requests and
# read as content in answers (the SDK's JSON parser stops at a fixed depth, and Python's json at the
# interpreter's recursion limit, which another library may have raised).
MAX_SCHEMA_DEPTH = 64


def json_depth(value: Any) -> int:
    """How deep `value` nests, counted up to one past MAX_SCHEMA_DEPTH."""
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


def _call(value: Any, allowed: frozenset[str], arguments_key: str) -> Call | None:
    """A call if `value` is `{"name": <allowed>, <arguments_key>: {…}}`, else None."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    if value["name"] not in allowed or not set(value) <= {"name", arguments_key}:
        return None
    arguments = value.get(arguments_key, {})
    if not isinstance(arguments, dict) or json_depth(arguments) > MAX_SCHEMA_DEPTH:
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
