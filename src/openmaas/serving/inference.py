"""The inference use-cases: predict, explain, embed, and complete (chat or text, whole or streamed).

Every one runs through `Inference._metered`: resolve the model that answers (a dict lookup when
it is loaded; a deployment unloaded while idle loads first) → check the request against it →
admit its worst case at the usage gate (429/402 when it can't) → run it → record what it used, or
abandon the hold when nothing was served → wait until the usage is durable. A deployment swapped
to a new version while a request queued (`ReplicaClosed`) is asked once more.

The HTTP layer only parses, calls one method here and shapes the response; it does no metering.
Predict is the hot path: when the model is loaded and the gate answers from memory it awaits
nothing before the batch, and allocates no more than it must.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

import numpy as np

from openmaas import errors
from openmaas.clock import Clock
from openmaas.metering.gate import UsageGate
from openmaas.serving import adapters as fine_tuned
from openmaas.serving.batcher import ReplicaClosed
from openmaas.serving.completions import Completion, StreamedCompletion
from openmaas.serving.directory import ServedModel
from openmaas.serving.explain.options import ExplainLimits, ExplainOptions, parse_options
from openmaas.serving.openai_types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from openmaas.serving.replicas import ReplicaManager
from openmaas.serving.request_body import json_body, request_timeout
from openmaas.serving.runtimes import PREDICT_TASKS
from openmaas.serving.usage import BatchUsage, RequestUsage, Units
from openmaas.tasks import SENTENCE_EMBEDDING
from openmaas.tenancy import scopes
from openmaas.tenancy.auth import Principal

if TYPE_CHECKING:
    from openmaas.serving.encoders.sentence import Embeddings
    from openmaas.serving.explain.explainer import Explainer

T = TypeVar("T")
Gone = Callable[[], bool] | None  # tells whether the client went away (None: can't tell)

# The engine admits waiting batch lines only after the live requests waiting (never preempting).
BATCH_PRIORITY = 1
_PREDICT_FIELDS = frozenset({"inputs", "top_k", "timeout"})
_EXPLAIN_FIELDS = frozenset({"inputs", "target", "steps", "baseline", "timeout"})


class Answer(NamedTuple, Generic[T]):
    served: ServedModel  # the model (for a traffic split, the version) that answered
    result: T
    headers: dict[str, str]  # `x-ratelimit-*`


class MeteredCall(Protocol[T]):
    """One request as `Inference._metered` runs it (and, after a `ReplicaClosed`, runs it again)."""

    # Whether a deployment unloaded while idle is loaded for it and waited for (the /predict
    # family, the only one that scales to zero), or answered 503 while it loads.
    cold_start: bool

    def check(self, served: ServedModel) -> Units:
        """Check the request against the model that will answer it (4xx if it can't); the most it
        may use, which the gate admits and holds."""
        ...

    def run(self, served: ServedModel, usage: RequestUsage) -> Awaitable[T]:
        """Serve it. A run that serves in parts records what it served itself, if it fails part-way
        or streams."""
        ...

    def used(self, result: T) -> Units | None:
        """What it used, to record; None for a stream, which records it as it ends."""
        ...


class Explained(NamedTuple):
    explanations: list[dict[str, Any]]
    steps: int  # integrated-gradients steps taken


class Inference:
    def __init__(
        self,
        replicas: ReplicaManager,
        gate: UsageGate,
        clock: Clock,
        *,
        predict_timeout_s: float,
        predict_max_rows: int,
        explain_timeout_s: float,
        explain_limits: ExplainLimits,
        adapters: fine_tuned.Adapters | None = None,
    ) -> None:
        self._replicas = replicas
        self._adapters = adapters  # `ft:` models: an adapter on its base's deployment
        self._gate = gate
        self._clock = clock
        self._predict_timeout_s = predict_timeout_s
        self._predict_max_rows = predict_max_rows
        self._explain_timeout_s = explain_timeout_s
        self._explain_limits = explain_limits

    def predict(
        self,
        caller: Principal,
        deployment: str,
        body: bytes,
        timeout: str | None,
        request_id: str,
        gone: Gone,
    ) -> Awaitable[Answer[list[Any]]]:
        """Predictions for the rows of a JSON `body` (`inputs`, `top_k`, `timeout`); `timeout` is
        the caller's `X-Request-Timeout`. A plain function returning the metered coroutine, so the
        hot path makes one coroutine, not two; the checks before it raise at the call."""
        caller.require(scopes.INFERENCE)
        fields = json_body(body, _PREDICT_FIELDS)
        timeout_s = request_timeout(timeout, fields, self._predict_timeout_s)
        call = Prediction(
            deployment, fields.get("inputs"), fields.get("top_k"), timeout_s, gone, self._predict_max_rows
        )
        return self._metered(caller, deployment, request_id, call)

    async def explain(
        self,
        caller: Principal,
        deployment: str,
        body: bytes,
        timeout: str | None,
        request_id: str,
        gone: Gone,
    ) -> Answer[Explained]:
        """Feature attributions for the rows of a JSON `body` (`inputs`, `target`, `steps`,
        `baseline`, `timeout`), on the deployment's own explanation queue."""
        fields = json_body(body, _EXPLAIN_FIELDS)
        caller.require(scopes.INFERENCE)
        timeout_s = request_timeout(timeout, fields, self._explain_timeout_s)
        call = Explanation(deployment, fields, self._explain_limits, timeout_s, gone)
        return await self._metered(caller, deployment, request_id, call)

    async def embed(self, caller: Principal, body: EmbeddingRequest, request_id: str) -> Answer[Embeddings]:
        caller.require(scopes.INFERENCE)
        return await self._metered(caller, body.model, request_id, Embedding(body))

    async def complete(
        self, caller: Principal, body: ChatCompletionRequest | CompletionRequest, request_id: str
    ) -> Answer[dict[str, Any]]:
        """A chat or text completion, whole: OpenAI's response object."""
        caller.require(scopes.INFERENCE)
        call = Completion(body, request_id, self._created())
        return await self._metered(caller, body.model, request_id, call)

    async def stream(
        self, caller: Principal, body: ChatCompletionRequest | CompletionRequest, request_id: str
    ) -> Answer[AsyncIterator[bytes]]:
        """A chat or text completion, admitted now and streamed as server-sent events."""
        caller.require(scopes.INFERENCE)
        call = StreamedCompletion(body, request_id, self._created())
        return await self._metered(caller, body.model, request_id, call)

    async def batch_line(
        self,
        caller: Principal,
        body: ChatCompletionRequest | CompletionRequest | EmbeddingRequest,
        request_id: str,
    ) -> dict[str, Any]:
        """One line of a batch, answered whole in OpenAI's response shape and metered in the batch
        units (`units.BATCH_UNITS`), outside the rate limits of live traffic; its budget is held
        like any request's. `request_id` is the line's own, so a line run again meters once."""
        caller.require(scopes.INFERENCE)
        if isinstance(body, EmbeddingRequest):
            answer = await self._metered(caller, body.model, request_id, Embedding(body), BatchUsage)
            return embedding_list(body, answer.result)
        call = Completion(body, request_id, self._created(), priority=BATCH_PRIORITY)
        return (await self._metered(caller, body.model, request_id, call, BatchUsage)).result

    def _created(self) -> int:
        return int(self._clock.now().timestamp())

    async def _acquire(self, org_id: str, name: str, call: MeteredCall[T]) -> ServedModel:
        """The model answering a name not loaded under that name: a fine-tuned adapter on its base,
        or a deployment loading now."""
        if self._adapters is not None and name.startswith(fine_tuned.PREFIX):
            return await self._adapters.acquire(org_id, name)
        return await self._replicas.acquire(org_id, name, cold_start=call.cold_start)

    async def _metered(
        self,
        caller: Principal,
        name: str,
        request_id: str,
        call: MeteredCall[T],
        metering: type[RequestUsage] = RequestUsage,
    ) -> Answer[T]:
        """Resolve → check → admit → run → record (or abandon) → wait until durable."""
        org_id = caller.require_org()
        replicas = self._replicas
        for attempt in (1, 2):
            # The common case (loaded, admitted from memory) awaits nothing until the run.
            served = replicas.acquire_loaded(org_id, name) or await self._acquire(org_id, name, call)
            worst = call.check(served)
            usage = metering(self._gate, caller, served, request_id)
            headers = usage.admit_from_memory(worst)
            if headers is None:
                headers = await usage.admit_in_thread(worst)
            try:
                result = await call.run(served, usage)
            except ReplicaClosed:
                usage.abandon()
                if attempt == 2:
                    raise
                continue  # swapped for a new version while it queued: ask the new one
            except BaseException as exc:
                usage.abandon()  # does nothing when the run recorded what it served
                if _server_side(exc):
                    usage.failed()
                raise
            used = call.used(result)
            if used is not None:
                usage.record_units(used)
                await usage.durable(withdraw=True)  # the answer has not begun: refused unbilled
            return Answer(served, result, headers)
        raise AssertionError("unreachable")


def _server_side(exc: BaseException) -> bool:
    """A failure the error rate counts: not a client's mistake found while running (4xx), not a
    client that went away or a shutdown (cancelled)."""
    if not isinstance(exc, Exception):
        return False
    return not (isinstance(exc, errors.OpenMaaSError) and exc.status < 500)


class Prediction:
    """`/predict`: rows checked against the answering model's signature, queued on its batcher
    (which runs more rows than the deployment's `max_batch_size` in slices); at most `max_rows`."""

    __slots__ = (
        "asked_top_k",
        "deployment",
        "gone",
        "inputs",
        "max_rows",
        "rows",
        "timeout_s",
        "top_k",
        "units",
    )
    cold_start = True
    # Set by `check` (no empty placeholders made per request before it).
    rows: list[Any]
    top_k: int | None
    units: Units

    def __init__(
        self, deployment: str, inputs: Any, top_k: Any, timeout_s: float, gone: Gone, max_rows: int
    ) -> None:
        self.deployment = deployment
        self.inputs = inputs
        self.asked_top_k = top_k
        self.timeout_s = timeout_s
        self.gone = gone
        self.max_rows = max_rows

    def check(self, served: ServedModel) -> Units:
        runtime = served.runtime
        if runtime.task not in PREDICT_TASKS:
            raise errors.InvalidRequest(
                f"Deployment {self.deployment!r} serves a {runtime.task} model; call it through its "
                "OpenAI-style route instead.",
                param="deployment",
                code="wrong_model_type",
            )
        inputs = self.inputs
        if type(inputs) is list and len(inputs) > self.max_rows:
            raise errors.ValidationFailed(
                f"inputs has {len(inputs)} rows; a prediction takes at most {self.max_rows} "
                "(send the rest in further requests).",
                param="inputs",
                code="too_many_inputs",
            )
        self.rows, self.top_k = runtime.check(inputs, self.asked_top_k)
        self.units = {"requests": 1, "rows": len(self.rows)}
        return self.units

    def run(self, served: ServedModel, usage: RequestUsage) -> Awaitable[list[Any]]:
        return served.runtime.predict(self.rows, self.top_k, timeout_s=self.timeout_s, gone=self.gone)

    def used(self, result: list[Any]) -> Units:
        return self.units  # every row admitted is answered


class Explanation:
    """`/explain`: rows and options checked on the event loop, attributed on the deployment's
    explanation queue, never its prediction batcher."""

    cold_start = True
    # Set by `check`.
    explainer: Explainer
    rows: list[Any]
    options: ExplainOptions
    units: Units

    def __init__(
        self, deployment: str, body: dict[str, Any], limits: ExplainLimits, timeout_s: float, gone: Gone
    ) -> None:
        self.deployment = deployment
        self.body = body  # the parsed JSON body: `inputs` and the explain options
        self.limits = limits
        self.timeout_s = timeout_s
        self.gone = gone

    def check(self, served: ServedModel) -> Units:
        runtime = served.runtime
        if runtime.task not in PREDICT_TASKS:
            raise errors.InvalidRequest(
                f"Explanations are not available for deployment {self.deployment!r}: it serves a "
                f"{runtime.task} model.",
                param="deployment",
                code="explanations_unsupported",
            )
        self.explainer = runtime.explainer(self.limits)
        inputs = self.body.get("inputs")
        if type(inputs) is list:
            self.explainer.check_rows(inputs)  # their number, before each row is checked
        self.rows = runtime.check(inputs, None)[0]
        self.options = parse_options(
            self.body,
            task=runtime.task,
            labels=runtime.labels,
            check_rows=runtime.check_inputs.check,
            max_steps=self.limits.max_steps,
        )
        self.units = {"requests": 1, "rows": len(self.rows)}
        return self.units

    async def run(self, served: ServedModel, usage: RequestUsage) -> Explained:
        explanations = await self.explainer.explain(
            self.rows, self.options, timeout_s=self.timeout_s, gone=self.gone
        )
        return Explained(explanations, self.options.steps)

    def used(self, result: Explained) -> Units:
        return self.units


class Embedding:
    """`/v1/embeddings`: non-empty texts, as many as the model takes, embedded off the event loop."""

    cold_start = True  # on Ray replicas it may scale to zero: the first request waits for it

    def __init__(self, body: EmbeddingRequest) -> None:
        self.body = body
        self.texts = body.texts()

    def check(self, served: ServedModel) -> Units:
        runtime, texts = served.runtime, self.texts
        if runtime.task != SENTENCE_EMBEDDING:
            raise errors.InvalidRequest(
                f"Model {self.body.model!r} does not support embeddings.",
                param="model",
                code="wrong_model_type",
            )
        if not texts or len(texts) > runtime.max_inputs or any(not t for t in texts):
            raise errors.InvalidRequest(
                f"input must be 1 to {runtime.max_inputs} non-empty strings.",
                param="input",
                code="invalid_value",
            )
        dimensions = self.body.dimensions
        if dimensions is not None and dimensions != runtime.encoder.dimensions:
            raise errors.InvalidRequest(
                f"This model gives {runtime.encoder.dimensions} dimensions only.", param="dimensions"
            )
        return {"requests": 1, "input_tokens": sum(runtime.encoder.count_tokens(texts)), "output_tokens": 0}

    def run(self, served: ServedModel, usage: RequestUsage) -> Awaitable[Embeddings]:
        return served.runtime.embed(self.texts)

    def used(self, result: Embeddings) -> Units:
        return {"requests": 1, "input_tokens": sum(result.token_counts), "output_tokens": 0}


def embedding_list(body: EmbeddingRequest, result: Embeddings) -> dict[str, Any]:
    """OpenAI's answer to `/v1/embeddings`."""
    vectors = result.vectors.numpy().astype(np.float32)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(vector, body.encoding_format)}
        for i, vector in enumerate(vectors)
    ]
    tokens = sum(result.token_counts)
    summary = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": body.model, "usage": summary}


def _encode(vector: np.ndarray, encoding: str) -> Any:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
