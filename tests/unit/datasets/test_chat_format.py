"""The chat-format validator of fine-tuning files: every problem named by its line, the examples
training reads, and token counts under the base model's own chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openmaas.datasets.chat_format import (
    MAX_LINE_BYTES,
    count_chat_tokens,
    read_chat_examples,
    validate_chat_file,
)


def _example(i: int = 0) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


def _write(tmp_path: Path, lines: list[str | bytes]) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


def test_a_good_file_passes_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    lines: list[str | bytes] = [json.dumps(_example(i)) for i in range(10)]
    lines.insert(3, "   ")
    report = validate_chat_file(_write(tmp_path, lines))
    assert report.ok and report.examples == 10
    examples = list(read_chat_examples(tmp_path / "train.jsonl"))
    assert [e.line for e in examples][:4] == [1, 2, 3, 5]
    assert examples[0].messages[1] == {"role": "assistant", "content": "a0"}


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ('{"messages": [', "invalid_json"),
        (b'{"messages": "\xff"}', "invalid_encoding"),
        ('["a list"]', "missing_messages"),
        ('{"prompt": "p", "completion": "c"}', "missing_messages"),
        ('{"messages": ["hi"]}', "invalid_message"),
        ('{"messages": [{"role": "tool", "content": "x"}]}', "invalid_role"),
        ('{"messages": [{"role": "user", "content": 3}]}', "invalid_content"),
        ('{"messages": [{"role": "user", "content": "x", "mood": 1}]}', "unknown_key"),
        ('{"messages": [{"role": "user", "content": "x", "weight": 1}]}', "invalid_weight"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "no_assistant_message"),
        ('{"messages": []}', "no_assistant_message"),
    ],
)
def test_each_problem_is_named_by_its_line(tmp_path: Path, line: str | bytes, code: str) -> None:
    lines: list[str | bytes] = [json.dumps(_example(i)) for i in range(12)]
    lines[6] = line
    report = validate_chat_file(_write(tmp_path, lines))
    assert [(issue.line, issue.code) for issue in report.issues] == [(7, code)]
    assert report.examples == 11
    with pytest.raises(ValueError, match="line 7"):
        list(read_chat_examples(tmp_path / "train.jsonl"))


def test_too_few_examples_and_an_overlong_line(tmp_path: Path) -> None:
    report = validate_chat_file(_write(tmp_path, [json.dumps(_example())] * 9))
    assert [(i.line, i.code) for i in report.issues] == [(None, "too_few_examples")]
    huge = b'{"messages": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}'
    report = validate_chat_file(_write(tmp_path, [json.dumps(_example())] * 3 + [huge, "{"]))
    assert [(i.line, i.code) for i in report.issues] == [(4, "line_too_long"), (5, "invalid_json")]


def test_weights_on_assistant_messages_are_accepted(tmp_path: Path) -> None:
    row = _example()
    row["messages"][1]["weight"] = 0
    row["messages"].append({"role": "assistant", "content": "again", "weight": 1})
    assert validate_chat_file(_write(tmp_path, [json.dumps(row)] * 10)).ok


def test_token_counts_follow_the_base_models_chat_template(tmp_path: Path) -> None:
    from openmaas.engine.testing import build_tokenizer
    from openmaas.engine.tokenizer import Tokenizer

    build_tokenizer(tmp_path)
    tokenizer = Tokenizer.from_pretrained(tmp_path)
    rows = [_example(i) for i in range(10)]
    rows[4]["messages"][0]["content"] = "a long question " * 40
    path = _write(tmp_path, [json.dumps(row) for row in rows])
    expected = [len(tokenizer.encode_chat(row["messages"])) for row in rows]
    count = count_chat_tokens(path, tokenizer.encode_chat, max_tokens=64)
    assert (count.tokens, count.examples, count.longest) == (sum(expected), 10, max(expected))
    assert max(expected) > 64 >= sorted(expected)[-2]
    assert [(i.line, i.code) for i in count.issues] == [(5, "example_too_long")]
