"""Fine-tuning files in OpenAI's chat format: one `{"messages": [...]}` object per line, roles
system/user/assistant, at least one assistant message per example, at least `MIN_EXAMPLES`
examples.

One parser for both uses: `validate_chat_file` streams a file line by line at upload and reports
every problem with its line number (as `ValidationIssue`s, the dataset validator's shape), and
`read_chat_examples` gives training the same parsed examples. Token counts need the base model's
tokenizer, which is known only when a job names the base: `count_chat_tokens` takes the encoder
as an argument and is called at job creation. A library: no database, HTTP or tokenizer here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmaas.datasets.report import IssueCollector, ValidationIssue

ROLES = ("system", "user", "assistant")
MIN_EXAMPLES = 10
# A longer line is refused without reading it whole, so a file of one giant line costs no memory.
MAX_LINE_BYTES = 4 * 1024 * 1024
_MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})

Message = dict[str, Any]
Encoder = Callable[[list[Message]], list[int]]


@dataclass
class ChatFileReport:
    """What validation found: the number of good examples and every problem, by line."""

    examples: int = 0
    issues: list[ValidationIssue] = field(default_factory=list)
    issues_truncated: bool = False

    @property
    def ok(self) -> bool:
        return not self.issues


@dataclass(frozen=True)
class ChatExample:
    line: int
    messages: list[Message]


def _lines(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each non-blank line; None for a line over MAX_LINE_BYTES."""
    with open(path, "rb") as handle:
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                yield number, None
            elif raw.strip():
                yield number, raw


def _problem_in_message(index: int, message: Any) -> tuple[str, str] | None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        return "invalid_message", f"{where} must be an object with 'role' and 'content'"
    unknown = sorted(set(message) - _MESSAGE_KEYS)
    if unknown:
        return "unknown_key", f"{where} has unsupported key(s) {', '.join(map(repr, unknown))}"
    role = message.get("role")
    if role not in ROLES:
        return "invalid_role", f"{where}.role is {role!r}; it must be one of {', '.join(ROLES)}"
    if not isinstance(message.get("content"), str):
        return "invalid_content", f"{where}.content must be a string"
    if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)):
        return "invalid_weight", f"{where}.weight may only be 0 or 1, on an assistant message"
    return None


def parse_example(raw: bytes | None) -> list[Message] | tuple[str, str]:
    """The messages of one line, or (code, message) saying what is wrong with it."""
    if raw is None:
        return "line_too_long", f"the line is longer than {MAX_LINE_BYTES} bytes"
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        return "invalid_encoding", "the line is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return "invalid_json", f"the line is not valid JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return "missing_messages", 'each line must be an object with a "messages" list'
    messages: list[Any] = body["messages"]
    for index, message in enumerate(messages):
        problem = _problem_in_message(index, message)
        if problem is not None:
            return problem
    if not any(message["role"] == "assistant" for message in messages):
        return "no_assistant_message", "the example has no assistant message to learn from"
    return messages


def validate_chat_file(path: Path | str, *, min_examples: int = MIN_EXAMPLES) -> ChatFileReport:
    """Every problem of a chat-format fine-tuning file, streamed line by line."""
    collector = IssueCollector()
    report = ChatFileReport()
    for number, raw in _lines(Path(path)):
        parsed = parse_example(raw)
        if isinstance(parsed, tuple):
            collector.add(parsed[0], parsed[1], line=number)
        else:
            report.examples += 1
    if not collector.issues and report.examples < min_examples:
        collector.add(
            "too_few_examples",
            f"the file has {report.examples} examples; fine-tuning needs at least {min_examples}",
        )
    report.issues, report.issues_truncated = collector.issues, collector.truncated
    return report


def read_chat_examples(path: Path | str) -> Iterator[ChatExample]:
    """The examples of a file that passed `validate_chat_file`; a bad line raises ValueError."""
    for number, raw in _lines(Path(path)):
        parsed = parse_example(raw)
        if isinstance(parsed, tuple):
            raise ValueError(f"line {number}: {parsed[1]}")
        yield ChatExample(number, parsed)


@dataclass
class TokenCount:
    """Tokens of a file under one tokenizer; `issues` name the examples over the context."""

    tokens: int = 0
    examples: int = 0
    longest: int = 0
    issues: list[ValidationIssue] = field(default_factory=list)


def count_chat_tokens(path: Path | str, encode: Encoder, *, max_tokens: int) -> TokenCount:
    """Count each example's tokens as `encode` (the base model's chat template) makes them, and
    report every example longer than `max_tokens` by its line."""
    collector = IssueCollector()
    count = TokenCount()
    for example in read_chat_examples(path):
        length = len(encode(example.messages))
        count.tokens += length
        count.examples += 1
        count.longest = max(count.longest, length)
        if length > max_tokens:
            collector.add(
                "example_too_long",
                f"the example is {length} tokens; the model's context holds {max_tokens}",
                line=example.line,
            )
    count.issues = collector.issues
    return count
