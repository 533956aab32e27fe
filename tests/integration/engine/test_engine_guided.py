"""Guided decoding in the engine: random-weight models write output that parses and validates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from openmaas.engine import LLMEngine, SamplingParams
from openmaas.engine.guided import GrammarSpec
from openmaas.errors import InvalidRequest

from .conftest import ARCHS, make_engine

# Nested objects, arrays, enums, required fields and anyOf, with bounds a random model can finish in.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "kind": {"enum": ["cat", "dog", "fox"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
        "owner": {
            "type": "object",
            "properties": {
                "id": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "null"}]}
            },
            "required": ["id"],
            "additionalProperties": False,
        },
        "ok": {"type": "boolean"},
    },
    "required": ["name", "kind", "age", "tags", "owner", "ok"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engines(model_dirs: dict[str, Path]) -> dict[str, LLMEngine]:
    return {arch: make_engine(model_dirs[arch]) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_sampled_output_always_parses_and_validates(engines: dict[str, LLMEngine], arch: str) -> None:
    engine = engines[arch]
    spec = GrammarSpec.for_schema(SCHEMA)
    params = [SamplingParams(max_tokens=200, temperature=1.0, seed=seed, grammar=spec) for seed in range(6)]
    results = engine.generate([[5, 6, 7]] * len(params), params)
    for (choice,) in results:
        assert choice.finish_reason == "stop", choice.text
        jsonschema_rs.validate(SCHEMA, json.loads(choice.text))
    assert engine.grammars is not None and engine.grammars.compiled >= 1


def test_greedy_and_n_choices_are_constrained_each(engines: dict[str, LLMEngine]) -> None:
    engine = engines["qwen2"]
    spec = GrammarSpec.for_schema(SCHEMA)
    (choices,) = engine.generate([[9, 10]], SamplingParams(max_tokens=200, n=3, seed=1, grammar=spec))
    greedy = engine.generate([[9, 10]], SamplingParams(max_tokens=200, temperature=0.0, grammar=spec))
    for choice in [*choices, greedy[0][0]]:
        assert choice.finish_reason == "stop"
        jsonschema_rs.validate(SCHEMA, json.loads(choice.text))


def test_json_object_gives_an_object(engines: dict[str, LLMEngine]) -> None:
    engine = engines["llama"]
    for seed in range(2):
        ((choice,),) = engine.generate(
            [[5, 6, 7]], SamplingParams(max_tokens=100, seed=seed, grammar=GrammarSpec("json_object"))
        )
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.text), dict)
        else:  # a random model may still be writing its object: never claimed complete
            assert choice.finish_reason == "length" and choice.text.startswith("{")


def test_lark_with_embedded_schema(engines: dict[str, LLMEngine]) -> None:
    schema = json.dumps(
        {
            "type": "object",
            "properties": {"x": {"enum": [1, 2]}},
            "required": ["x"],
            "additionalProperties": False,
        }
    )
    spec = GrammarSpec("lark", f'start: "call " %json{schema}')
    ((choice,),) = engines["llama"].generate([[5]], SamplingParams(max_tokens=50, grammar=spec))
    assert choice.finish_reason == "stop"
    assert choice.text.startswith("call ") and json.loads(choice.text[5:])["x"] in (1, 2)


def test_a_schema_too_long_for_max_tokens_ends_with_length(engines: dict[str, LLMEngine]) -> None:
    long = {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 200}},
        "required": ["text"],
    }
    ((choice,),) = engines["llama"].generate(
        [[5, 6]], SamplingParams(max_tokens=10, grammar=GrammarSpec.for_schema(long))
    )
    assert choice.finish_reason == "length"
    assert choice.completion_tokens == 10


@pytest.mark.parametrize(
    ("spec", "word"),
    [
        (GrammarSpec.for_schema({"type": "object", "propertyNames": {"pattern": "a"}}), "propertyNames"),
        (GrammarSpec.for_schema({"type": "objectx"}), "objectx"),
        (GrammarSpec("json_schema", "{not json"), "JSON"),
        (GrammarSpec("lark", "start: undefined_rule"), "undefined_rule"),
    ],
)
def test_bad_grammars_are_refused_before_admission(
    engines: dict[str, LLMEngine], spec: GrammarSpec, word: str
) -> None:
    engine = engines["llama"]
    with pytest.raises(InvalidRequest) as caught:
        engine.check_prompt([5], SamplingParams(grammar=spec))
    assert caught.value.param == "response_format"
    assert word in str(caught.value)
    assert not engine.has_unfinished_requests


def test_a_spec_is_compiled_once(engines: dict[str, LLMEngine]) -> None:
    engine = engines["qwen2"]
    assert engine.grammars is not None
    schema = {"type": "object", "properties": {"q": {"type": "boolean"}}, "required": ["q"]}
    spec = GrammarSpec.for_schema(schema)
    before = engine.grammars.compiled
    engine.generate([[5], [6]], SamplingParams(max_tokens=20, grammar=spec))
    engine.generate([[7]], SamplingParams(max_tokens=20, grammar=spec))
    assert engine.grammars.compiled == before + 1
