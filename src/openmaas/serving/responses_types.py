"""OpenAI's Responses API request (`POST /v1/responses`), in its shapes: the input items, function
tools and `text.format` it accepts. What it does not support (web search, files, images, reasoning
items) is refused with a 400 naming the field, as every OpenAI-shaped request here is.

serving/responses.py maps a request onto a chat completion; nothing here runs anything.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from openmaas.engine.sampling_params import MAX_SEED, MIN_SEED
from openmaas.schemas.json_types import JSON_INTEGER, Boolean, Number
from openmaas.schemas.names import Label
from openmaas.serving.openai_types import MAX_MODEL_LENGTH, FunctionName, StrictBody


class InputText(StrictBody):
    type: Literal["input_text"]
    text: str


class OutputText(StrictBody):
    """An earlier answer's text, as a client sends an output message back as input."""

    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


ContentPart = Annotated[InputText | OutputText, Field(discriminator="type")]


class MessageItem(StrictBody):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None
    phase: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


CallId = Annotated[str, Field(min_length=1, max_length=256)]


class FunctionCallItem(StrictBody):
    """A call the model made (sent back with its output to continue)."""

    type: Literal["function_call"]
    call_id: CallId
    name: FunctionName
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(StrictBody):
    type: Literal["function_call_output"]
    call_id: CallId
    output: str | list[InputText]
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "".join(part.text for part in self.output)


def _item_type(value: Any) -> str | None:
    # An "easy" message ({"role", "content"}) has no `type`.
    if isinstance(value, dict):
        kind = value.get("type", "message")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(
        _item_type,
        custom_error_type="item_type",
        custom_error_message="the item types supported are message, function_call and function_call_output",
    ),
]


class FunctionTool(StrictBody):
    """A function tool in the Responses shape (flat: no `function` wrapper)."""

    type: Literal["function"] = Field(description="Only function tools are supported")
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: Boolean | None = None


class NamedFunctionChoice(StrictBody):
    type: Literal["function"]
    name: str


class FormatText(StrictBody):
    type: Literal["text"]


class FormatJsonObject(StrictBody):
    type: Literal["json_object"]


class FormatJsonSchema(StrictBody):
    type: Literal["json_schema"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    # `schema` shadows a BaseModel attribute: kept under another name, read and written as `schema`.
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: Boolean | None = None


TextFormat = Annotated[FormatText | FormatJsonObject | FormatJsonSchema, Field(discriminator="type")]


class TextConfig(StrictBody):
    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = None


def _text_as_message(value: Any) -> Any:
    # A text is one user message; validated as a list alone, errors name the item (`input.0.…`).
    return [{"type": "message", "role": "user", "content": value}] if isinstance(value, str) else value


class ResponseRequest(StrictBody):
    model: Label = Field(min_length=1, max_length=MAX_MODEL_LENGTH)
    input: Annotated[list[InputItem], BeforeValidator(_text_as_message)] = Field(
        description="A text (one user message), or a list of input items"
    )
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1), JSON_INTEGER] | None = None
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, gt=0, le=1)
    tools: list[FunctionTool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    parallel_tool_calls: Boolean | None = None
    text: TextConfig | None = None
    stream: Boolean = False
    store: Boolean = True
    previous_response_id: str | None = Field(default=None, max_length=64)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    user: str | None = Field(default=None, max_length=256)
    truncation: Literal["disabled"] | None = None
    # Extensions (as on chat completions): a seed makes sampling repeatable.
    seed: Annotated[int, Field(ge=MIN_SEED, le=MAX_SEED), JSON_INTEGER] | None = None

    def items(self) -> list[MessageItem | FunctionCallItem | FunctionCallOutputItem]:
        return list(self.input)


# The answers' shapes, for the OpenAPI document (serving/response_events.py writes them with orjson,
# with every field of OpenAI's response object).


class ResponseObject(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(description="`resp_…`")
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress"]
    model: str
    output: list[dict[str, Any]] = Field(description="`message` and `function_call` items")
    usage: dict[str, Any] | None


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"]
    deleted: bool
