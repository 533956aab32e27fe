"""A batch's input file read line by line: each line `{"custom_id", "method", "url", "body"}`,
checked the way OpenAI checks it before a batch runs — JSON, a unique `custom_id`, `method` POST,
`url` the batch's endpoint, the same `body.model` on every line. Every problem is named by its
1-based line, as OpenAI's `errors.data` lists them. Also the shapes of the lines a batch writes:
an answer or a refusal (`output_line`), a request never sent (`expired_line`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pydantic

from openmaas import errors
from openmaas.serving.openai_types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

MAX_LINES = 50_000  # OpenAI's limit on the requests of one batch
MAX_ERRORS = 100  # problems listed; the rest are counted in the last one's message


_BODIES: dict[str, type[ChatCompletionRequest | CompletionRequest | EmbeddingRequest]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
}


@dataclass(frozen=True, slots=True)
class BatchRequest:
    line: int  # 1-based, in the input file
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Problem:
    line: int | None
    code: str
    message: str
    param: str | None

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass
class BatchInput:
    requests: list[BatchRequest]
    problems: list[Problem]
    model: str | None  # the first line's `body.model`


def read_input(path: Path, endpoint: str) -> BatchInput:
    """Every line of the file at `path`, checked against the batch's `endpoint`."""
    requests: list[BatchRequest] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    model: str | None = None
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            if len(requests) + len(problems) >= MAX_LINES:
                problems.append(
                    Problem(number, "too_many_requests", f"A batch holds at most {MAX_LINES} requests.", None)
                )
                break
            request, problem = _check_line(number, raw, endpoint, seen, model)
            if problem is not None:
                problems.append(problem)
                continue
            assert request is not None
            model = model or request.body["model"]
            seen.add(request.custom_id)
            requests.append(request)
    if not requests and not problems:
        problems.append(Problem(None, "empty_file", "The input file has no requests.", "input_file_id"))
    if len(problems) > MAX_ERRORS:
        more = len(problems) - MAX_ERRORS
        problems = problems[:MAX_ERRORS]
        last = problems[-1]
        problems[-1] = Problem(
            last.line, last.code, f"{last.message} ({more} more problems not listed)", last.param
        )
    return BatchInput(requests, problems, model)


def _check_line(
    number: int, raw: bytes, endpoint: str, seen: set[str], model: str | None
) -> tuple[BatchRequest | None, Problem | None]:
    def problem(code: str, message: str, param: str | None) -> tuple[None, Problem]:
        return None, Problem(number, code, f"Line {number}: {message}", param)

    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return problem("invalid_json_line", f"not valid JSON ({exc}).", None)
    if not isinstance(item, dict):
        return problem("invalid_json_line", "a request is a JSON object.", None)
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return problem("missing_required_parameter", "custom_id must be a non-empty string.", "custom_id")
    if len(custom_id) > 512:
        return problem("invalid_value", "custom_id may have at most 512 characters.", "custom_id")
    if custom_id in seen:
        return problem(
            "duplicate_custom_id", f"custom_id {custom_id!r} is used by an earlier line.", "custom_id"
        )
    if item.get("method") != "POST":
        return problem("invalid_method", f"method must be POST, not {item.get('method')!r}.", "method")
    url = item.get("url")
    if url != endpoint:
        return problem("invalid_url", f"url {url!r} is not this batch's endpoint {endpoint!r}.", "url")
    body = item.get("body")
    if not isinstance(body, dict):
        return problem("invalid_request", "body must be a JSON object.", "body")
    line_model = body.get("model")
    if not isinstance(line_model, str) or not line_model:
        return problem("missing_required_parameter", "body.model must be a model name.", "body.model")
    if model is not None and line_model != model:
        return problem(
            "mismatched_model",
            f"body.model {line_model!r} differs from the batch's model {model!r}; a batch uses one model.",
            "body.model",
        )
    return BatchRequest(number, custom_id, body), None


def parse_body(
    endpoint: str, body: dict[str, Any]
) -> ChatCompletionRequest | CompletionRequest | EmbeddingRequest:
    """The line's body as the endpoint's request (answered whole: a batch line does not stream)."""
    try:
        parsed = _BODIES[endpoint].model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first.get("loc", ())) or None
        raise errors.InvalidRequest(
            f"{param}: {first.get('msg')}" if param else str(first.get("msg")), param=param
        ) from None
    if isinstance(parsed, ChatCompletionRequest | CompletionRequest) and parsed.stream:
        parsed = parsed.model_copy(update={"stream": False, "stream_options": None})
    return parsed


def output_line(
    request: BatchRequest, request_id: str, status_code: int, body: dict[str, Any]
) -> dict[str, Any]:
    """A line of the output or error file, in OpenAI's shape."""
    return {
        "id": f"batch_req_{request_id}",
        "custom_id": request.custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
    }


def expired_line(batch_id: str, request: BatchRequest) -> dict[str, Any]:
    """The error-file line of a request never sent before the batch expired."""
    return {
        "id": f"batch_req_{batch_id}-{request.line}",
        "custom_id": request.custom_id,
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        },
    }
