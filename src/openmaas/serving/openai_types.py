"""OpenAI-shaped requests for chat completions, completions and embeddings, and the model list.

Fields and bounds follow OpenAI's API so the official `openai` SDK works unchanged; unknown fields
are refused with an error naming them (clients learn at once that a parameter is not supported).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from openmaas.engine.guided import GrammarSpec
from openmaas.engine.sampling_params import (
    MAX_REPETITION_PENALTY,
    MAX_SEED,
    MAX_STOP_STRINGS,
    MAX_TOP_LOGPROBS,
    MIN_REPETITION_PENALTY,
    MIN_SEED,
    SamplingParams,
)
from openmaas.errors import InvalidRequest
from openmaas.schemas.json_types import JSON_INTEGER, Boolean, Integer, Number
from openmaas.schemas.names import Label

# A deployment's name (100), or a fine-tuned adapter's `ft:<base>:<org>:<suffix>:<job>`. Names hold
# no control characters (PostgreSQL refuses NUL: a lookup failed there with a 500).
MAX_MODEL_LENGTH = 256

StopSequence = Annotated[str, Field(min_length=1)]


def _seed_bounds(schema: dict[str, Any]) -> None:
    del schema["maximum"]
    schema["exclusiveMaximum"] = MAX_SEED + 1


class StrictBody(BaseModel):
    """An OpenAI request object: a field it does not know is refused with an error naming it, not ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class StreamOptions(StrictBody):
    include_usage: Boolean = False


class ContentPart(StrictBody):
    type: Literal["text"]
    text: str


# Tool calling (serving/tools.py checks what a schema cannot: unique names, known names, calls that
# tool messages answer). A function's name follows OpenAI: letters, digits, `_` and `-`, at most 64.
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class FunctionDefinition(StrictBody):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="A JSON Schema for the arguments object; omitted: no arguments"
    )
    strict: Boolean | None = None


class ToolDefinition(StrictBody):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(StrictBody):
    name: str


class NamedToolChoice(StrictBody):
    type: Literal["function"]
    function: NamedFunction


def _tool_choice(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # One error at `tool_choice` itself, not one per member of the union (`tool_choice.literal[…]`).
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError(
            "tool_choice",
            '"none", "auto", "required" or {"type": "function", "function": {"name": …}}',
        ) from None


ToolChoice = Annotated[Literal["none", "auto", "required"] | NamedToolChoice, WrapValidator(_tool_choice)]


class FunctionCall(StrictBody):
    name: str
    arguments: str = Field(description="The arguments as a JSON object, in a string")


class ToolCall(StrictBody):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(StrictBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    # An assistant message's calls (its content may then be null), and the call a tool message answers.
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


# Structured outputs (`response_format`), in OpenAI's shapes. The engine enforces the schema with a
# grammar whatever `strict` says: the output always parses (or ends with finish_reason "length").
class ResponseFormatText(StrictBody):
    type: Literal["text"]


class ResponseFormatJsonObject(StrictBody):
    type: Literal["json_object"]


class JsonSchemaFormat(StrictBody):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$", description="a-z, A-Z, 0-9, _ and -; at most 64")
    description: str | None = None
    # `schema` shadows a BaseModel attribute: kept under another name, read and written as `schema`.
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: Boolean | None = None


class ResponseFormatJsonSchema(StrictBody):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]


def grammar_for(response_format: ResponseFormat | None) -> GrammarSpec | None:
    if response_format is None or isinstance(response_format, ResponseFormatText):
        return None
    if isinstance(response_format, ResponseFormatJsonObject):
        return GrammarSpec("json_object")
    return GrammarSpec.for_schema(response_format.json_schema.json_schema or {})


def token_biases(logit_bias: dict[str, float] | None) -> dict[int, float]:
    """OpenAI's `logit_bias` (token ids as JSON object keys) as SamplingParams takes it."""
    biases: dict[int, float] = {}
    for key, bias in (logit_bias or {}).items():
        if not key.isascii() or not key.isdigit() or len(key) > 10:
            raise InvalidRequest(f"logit_bias keys must be token ids, got {key[:20]!r}", param="logit_bias")
        biases[int(key)] = bias
    return biases


class _Sampling(StrictBody):
    model: Label = Field(min_length=1, max_length=MAX_MODEL_LENGTH)
    max_tokens: Annotated[int, Field(ge=1), JSON_INTEGER] | None = None
    temperature: Number = Field(default=1.0, ge=0, le=2)
    top_p: Number = Field(default=1.0, gt=0, le=1)
    top_k: Integer = Field(default=0, ge=-1)
    # Documented as -2**63 <= seed < 2**63: both bounds are exact as the 64-bit floats that JSON
    # Schema validators compare with, where 2**63 - 1 is not (it rounds up to 2**63).
    seed: (
        Annotated[
            int,
            Field(ge=MIN_SEED, le=MAX_SEED, json_schema_extra=_seed_bounds),
            JSON_INTEGER,
        ]
        | None
    ) = None
    stop: StopSequence | Annotated[list[StopSequence], Field(max_length=MAX_STOP_STRINGS)] | None = None
    n: Integer = Field(default=1, ge=1, le=16)
    presence_penalty: Number = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: Number = Field(default=0.0, ge=-2, le=2)
    user: str | None = Field(default=None, max_length=256)
    stream: Boolean = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, Number] | None = Field(
        default=None, description="Token id (as a string) to a bias from -100 to 100 added to its logit"
    )
    # vLLM's extensions.
    min_p: Number = Field(default=0.0, ge=0, le=1)
    repetition_penalty: Number = Field(default=1.0, ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY)
    min_tokens: Integer = Field(default=0, ge=0)
    ignore_eos: Boolean = False

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def sampling(
        self, max_tokens: int | None, logprobs: bool, top_logprobs: int, grammar: GrammarSpec | None = None
    ) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            stop=self.stops(),
            n=self.n,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            logit_bias=token_biases(self.logit_bias),
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            min_tokens=self.min_tokens,
            ignore_eos=self.ignore_eos,
            grammar=grammar,
        )


class ChatCompletionRequest(_Sampling):
    # What `SamplingParams` checks, stated in the OpenAPI document: top_logprobs needs logprobs.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "properties": {"top_logprobs": {"type": "integer", "minimum": 1}},
                "required": ["top_logprobs"],
            },
            "then": {"properties": {"logprobs": {"const": True}}, "required": ["logprobs"]},
        }
    )

    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolDefinition] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = Field(
        default=None, description="`auto` (the default with tools), `none`, `required`, or a named function"
    )
    parallel_tool_calls: Boolean | None = None
    max_completion_tokens: Annotated[int, Field(ge=1), JSON_INTEGER] | None = None
    logprobs: Boolean = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS), JSON_INTEGER] | None = None
    response_format: ResponseFormat | None = None

    def to_sampling(self) -> SamplingParams:
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        grammar = grammar_for(self.response_format)
        return self.sampling(max_tokens, self.logprobs, self.top_logprobs or 0, grammar)


class CompletionRequest(_Sampling):
    prompt: str | list[Annotated[int, JSON_INTEGER]] = Field(description="Text, or token ids")
    max_tokens: Annotated[int, Field(ge=1), JSON_INTEGER] | None = 16
    logprobs: Annotated[int, Field(ge=0, le=5), JSON_INTEGER] | None = None
    echo: Boolean = False

    def to_sampling(self) -> SamplingParams:
        return self.sampling(self.max_tokens, self.logprobs is not None, self.logprobs or 0)


class EmbeddingRequest(StrictBody):
    model: Label = Field(min_length=1, max_length=MAX_MODEL_LENGTH)
    input: str | list[str] = Field(description="A text or a list of texts")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1), JSON_INTEGER] | None = None
    user: str | None = Field(default=None, max_length=256)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str  # the owning organisation's id
    # A fine-tuned adapter's base model (`name:version`), as vLLM names a LoRA's; None for the others.
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# The answers' shapes, for the OpenAPI document (serving/completions.py and the embeddings route
# write them with orjson, in these shapes).


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None = Field(description="Null when the answer is tool calls only")
    tool_calls: list[AssistantToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None
    finish_reason: str | None = Field(description="`stop`, `length`, `tool_calls`, …")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None
    finish_reason: str | None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32s")


class EmbeddingList(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# `stream: true`: server-sent events (the schema is one event's), each a `data:` line holding a
# chunk as JSON, then `data: [DONE]`.
EVENT_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {"type": "string", "description": "A chunk as JSON, or `[DONE]` last"},
                "event": {"type": "string"},
            },
        }
    }
}
