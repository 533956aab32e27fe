"""An LLM deployment's replicas as Ray actors (`placement: ray`): each actor holds our async LLM
engine (serving/runtimes/llm.py) on the CPUs and GPUs it reserves; `serving/ray_pool.py` keeps the
actors.

The API server holds a `RayLLMRuntime` in the served-model directory, where a local `LLMRuntime`
would be: it has the model's tokenizer and prompt limits (told by a loaded replica), so chat
templates, tokenising and every refusal of a bad request happen here before admission, as for a
local model. Then:

- a whole completion is one actor call (`LLMReplica.complete`);
- a streamed one is a Ray streaming generator (`LLMReplica.stream`): its first item says the
  request was admitted, so a refusal is still a plain 4xx/503 before the response begins; each
  further item carries every output the engine made since the last (at most one item per
  `STREAM_INTERVAL_S`), so the per-item cost of Ray is shared by the tokens made meanwhile.
  Closing the stream (a client gone) cancels the actor's task, whose engine stream then aborts
  the request and frees its KV blocks.

A replica that dies: calls that had sent nothing to the client yet — a whole completion, a stream
not yet begun — are sent once more to another replica. Generating has no side effects and the
usage event is written here, once, by request id, so the client gets one answer billed once; an
unseeded sampled answer is another sample, which the client, having seen none, cannot tell. A
stream already begun is not retried (the client holds part of an answer): it ends with an error
event and is billed for the tokens it was sent (serving/completions.py). The dead replica is
re-created by the pool.

A fine-tuned adapter (`ft:` model, serving/adapters.py) is a view of its base's runtime
(`with_stored_adapter`) whose requests carry the adapter's stored folder: the replica copies it
from the shared store once (serving/adapter_files.py), checks it before it admits the request (a
refusal is a plain 4xx, never a broken stream), and its engine applies it per row as locally.
Metering and who may call it stay on the API server, as for an in-process base.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError
from tokenizers import Tokenizer as HFTokenizer

from openmaas import errors
from openmaas.engine.guided import GrammarCompiler
from openmaas.engine.outputs import RequestOutput
from openmaas.engine.prompt_limits import PromptLimits
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.tokenizer import Tokenizer
from openmaas.serving.adapter_files import AdapterFiles, StoredAdapter
from openmaas.serving.ray_pool import (
    ReplicaEvents,
    ReplicaPool,
    ReplicaSpec,
    node_id,
    replaced,
    unavailable,
)
from openmaas.serving.runtimes.llm import LLMRuntime
from openmaas.storage import open_store
from openmaas.tasks import TEXT_GENERATION

# The least time between two items of a stream; tokens made meanwhile wait at most this long.
STREAM_INTERVAL_S = 0.01


class ReplicaLost(errors.ServiceUnavailable):
    """The replica generating a stream died part-way; the stream ends with this as its error event."""

    default_code = "replica_lost"


@dataclass(frozen=True)
class LLMFacts:
    """What the API server needs to prepare and check requests, told by a loaded replica."""

    limits: PromptLimits
    max_num_seqs: int
    eos_token_ids: list[int]
    grammar_vocab: int | None  # the grammar engine's vocabulary (None: the model has no tokenizer)
    tokenizer_json: str
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    node_id: str
    max_lora_rank: int | None = None  # None: the engine serves no adapters (max_loras 0)


class LLMReplica:
    """The actor: one LLM engine, built from the shared store."""

    def __init__(self, spec: ReplicaSpec) -> None:
        store = open_store(spec.storage_url)
        with store.reading(spec.artifact) as folder:
            self._runtime = LLMRuntime(folder, spec.config)
        slots = self._runtime.engine.engine.runner.adapters
        self._max_lora_rank = None if slots is None else slots.max_rank
        self._adapters = AdapterFiles(store)  # copied from the shared store on first use

    def facts(self) -> LLMFacts:
        runtime = self._runtime
        engine = runtime.engine.engine
        tokenizer = runtime.tokenizer
        return LLMFacts(
            limits=engine.prompt_limits,
            max_num_seqs=runtime.max_num_seqs,
            eos_token_ids=sorted(engine.eos_token_ids),
            grammar_vocab=engine.grammars.vocab_size if engine.grammars is not None else None,
            tokenizer_json=tokenizer.to_json(),
            chat_template=tokenizer.chat_template,
            bos_token=tokenizer.bos_token,
            eos_token=tokenizer.eos_token,
            node_id=node_id(),
            max_lora_rank=self._max_lora_rank,
        )

    def running(self) -> int:
        """Requests this replica's engine holds (admitted, not finished or aborted)."""
        return self._runtime.running

    async def _on(self, adapter: StoredAdapter | None) -> LLMRuntime:
        """The engine's runtime, on `adapter` when one is given (its files copied and checked first)."""
        if adapter is None:
            return self._runtime
        rank = self._max_lora_rank
        if rank is None:  # refused on the API server already (its facts say so)
            raise errors.Conflict(
                "This deployment serves no adapters (max_loras is 0).",
                param="model",
                code="adapters_disabled",
            )
        lora = self._adapters.ready(adapter, rank)
        if lora is None:  # first use on this replica: its files come from the shared store
            lora = await asyncio.to_thread(self._adapters.prepare, adapter, rank)
        return self._runtime.with_adapter(lora)

    async def complete(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str,
        priority: int = 0,
        adapter: StoredAdapter | None = None,
    ) -> list[Any]:
        """Every output of the request, to its end (cancelled: the request is aborted)."""
        runtime = await self._on(adapter)
        outputs: list[RequestOutput] = []
        async with runtime.generate(prompt_ids, params, request_id, priority) as stream:
            async for out in stream:
                outputs.append(out)
        return outputs

    @ray.method(num_returns="streaming")
    async def stream(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str,
        priority: int = 0,
        adapter: StoredAdapter | None = None,
    ) -> AsyncIterator[list[RequestOutput]]:
        """First `[]` once admitted (a refusal raises before it), then lists of outputs, each with
        every output made since the previous one."""
        runtime = await self._on(adapter)
        stream = runtime.generate(prompt_ids, params, request_id, priority)
        yield []
        finished = 0
        async with stream:
            while finished < params.n:
                batch = stream.ready()
                if not batch:  # none made while the last went out: the next goes out at once
                    batch = [await stream.__anext__(), *stream.ready()]
                yield batch
                finished += sum(1 for out in batch if out.finished)
                if finished < params.n:
                    # One item per interval at most: each costs Ray about a millisecond of this
                    # process's time (which the engine's step thread would wait for), so the tokens
                    # made meanwhile go together in the next.
                    await asyncio.sleep(STREAM_INTERVAL_S)


class _Admission:
    """What a runtime and its adapter views share: whether they still admit, and how many requests
    they run (on the event loop only: no lock)."""

    __slots__ = ("closed", "running")

    def __init__(self) -> None:
        self.closed = False
        self.running = 0  # admitted and not finished (a replaced runtime drains to 0)


class RayLLMRuntime:
    """A text-generation deployment's replicas on Ray, as the API server's directory holds it."""

    task = TEXT_GENERATION
    adapter: StoredAdapter | None = None  # set on a `with_stored_adapter` view

    def __init__(self, spec: ReplicaSpec, replicas: int, events: ReplicaEvents | None = None) -> None:
        """Start `replicas` actors and wait until they have loaded (on the replica loader thread)."""
        self.version = spec.config.model_version
        self.pool = ReplicaPool(LLMReplica, spec, replicas, events)
        facts: LLMFacts = self.pool.facts[0]
        self.tokenizer = Tokenizer(
            HFTokenizer.from_str(facts.tokenizer_json), facts.chat_template, facts.bos_token, facts.eos_token
        )
        self.limits = facts.limits
        self.max_model_len = facts.limits.max_model_len
        self.max_num_seqs = facts.max_num_seqs
        # Structured output is compiled here too, so a grammar that does not compile is refused
        # before admission (compiled specs are cached; the tokenizer is built on first use).
        self._grammars = (
            None
            if facts.grammar_vocab is None
            else GrammarCompiler(facts.tokenizer_json, facts.grammar_vocab, facts.eos_token_ids)
        )
        self.max_lora_rank = facts.max_lora_rank
        self.nodes = [f.node_id for f in self.pool.facts]
        self.admission = _Admission()

    @property
    def replicas(self) -> int:
        return len(self.pool)

    @property
    def running(self) -> int:
        """Requests admitted and not finished, its adapters' included."""
        return self.admission.running

    @property
    def in_flight(self) -> int:
        """`running`, as the replica manager asks before it scales an idle deployment to zero."""
        return self.admission.running

    def with_stored_adapter(self, adapter: StoredAdapter) -> RayLLMRuntime:
        """This runtime, answering on `adapter` (a shallow copy sharing the replicas and admission)."""
        view = copy.copy(self)
        view.adapter = adapter
        return view

    def check_prompt(self, prompt_ids: list[int], params: SamplingParams) -> int:
        return self.limits.check(prompt_ids, params, self._grammars)

    async def open(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str,
        *,
        whole: bool = False,
        priority: int = 0,
    ) -> RemoteStream | FinishedStream:
        """The request admitted by a replica: `whole`, run to its end in one call; else streamed."""
        admission = self.admission
        if admission.closed:
            raise replaced()
        admission.running += 1
        try:
            if whole:
                outputs = await self.pool.call(
                    "complete", prompt_ids, params, request_id, priority, self.adapter
                )
                return FinishedStream(outputs)
            return await self._stream(prompt_ids, params, request_id, priority)
        finally:
            admission.running -= 1

    async def _stream(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str, priority: int
    ) -> RemoteStream:
        pool = self.pool
        slot = pool.pick()
        for attempt in (1, 2):
            stream = RemoteStream(self, slot, prompt_ids, params, request_id, priority)
            try:
                await stream.admitted()
                return stream
            except ReplicaLost as lost:  # died before it began: nothing was sent, so once more
                if pool.closed:  # replaced meanwhile: the caller asks the new replicas
                    raise replaced() from None
                if attempt == 2:
                    break
                pool.retried(lost)
            slot = pool.pick(avoid=slot)
        raise unavailable()

    def stop_admitting(self) -> None:
        self.admission.closed = True

    def close(self) -> None:
        self.admission.closed = True
        self.pool.close()


class RemoteStream:
    """One request streamed from a replica, read as the engine's own `RequestStream` is."""

    def __init__(
        self,
        runtime: RayLLMRuntime,
        slot: int,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str,
        priority: int = 0,
    ) -> None:
        self._runtime = runtime
        self._slot = slot
        self._actor = runtime.pool.actors[slot]
        self._refs: Any = self._actor.stream.remote(prompt_ids, params, request_id, priority, runtime.adapter)
        self._outputs: deque[RequestOutput] = deque()
        self.done = False
        runtime.admission.running += 1
        runtime.pool.busy[slot] += 1

    async def admitted(self) -> None:
        """Wait for the replica's word that it admitted the request (raises its refusal)."""
        await self._next()

    def __aiter__(self) -> RemoteStream:
        return self

    async def __anext__(self) -> RequestOutput:
        while not self._outputs:
            batch = await self._next()
            if batch is None:
                raise StopAsyncIteration
            self._outputs.extend(batch)
        return self._outputs.popleft()

    async def _next(self) -> list[RequestOutput] | None:
        if self.done:
            return None
        try:
            ref = await self._refs.__anext__()
            batch: list[RequestOutput] = await ref
            return batch
        except StopAsyncIteration:
            self._finish()
            return None
        except asyncio.CancelledError:  # the client went away: stop generating
            self.abort()
            raise
        except RayTaskError as exc:
            self._finish()
            raise exc.cause if isinstance(exc.cause, Exception) else exc from None
        except RayActorError as exc:
            self._finish()
            self._runtime.pool.replace_if_dead(self._slot, self._actor, exc)
            raise ReplicaLost(
                "The model replica generating this answer stopped; retry the request.", retry_after=1
            ) from None

    async def __aenter__(self) -> RemoteStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()

    async def aclose(self) -> None:
        self.abort()

    def abort(self) -> None:
        """Stop generating (idempotent): the replica's task is cancelled, its request aborted."""
        if not self.done:
            self._finish()
            ray.cancel(self._refs)

    def _finish(self) -> None:
        if not self.done:
            self.done = True
            self._runtime.admission.running -= 1
            self._runtime.pool.busy[self._slot] -= 1


class FinishedStream:
    """A whole completion's outputs, read as a stream."""

    def __init__(self, outputs: list[RequestOutput]) -> None:
        self._outputs = iter(outputs)

    def __aiter__(self) -> FinishedStream:
        return self

    async def __anext__(self) -> RequestOutput:
        try:
            return next(self._outputs)
        except StopIteration:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> FinishedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
