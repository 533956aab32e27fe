"""AsyncLLMEngine: the asyncio front that streams one engine's outputs to many concurrent clients.

One background thread owns the `LLMEngine` and runs its step loop; the asyncio side never touches
engine state. `generate()` validates and admits a request at once (raising `InvalidRequest`, or
`ServiceUnavailable` with `retry_after` when the bounded waiting queue is full) and returns a
`RequestStream` to `async for` over. Closing the stream, breaking out of it, or cancelling the task
that reads it (a client disconnect) aborts the request: the step thread frees its KV blocks before
its next step. Torch releases the GIL in its kernels, so the event loop stays responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import deque
from types import TracebackType
from typing import Any

from openmaas.engine.config import EngineConfig
from openmaas.engine.llm_engine import EngineStats, LLMEngine
from openmaas.engine.lora import LoraRequest
from openmaas.engine.outputs import RequestOutput
from openmaas.engine.sampling_params import SamplingParams
from openmaas.engine.tokenizer import Tokenizer
from openmaas.errors import InternalError, InvalidRequest, ServiceUnavailable

log = logging.getLogger(__name__)
_ids = itertools.count()


class RequestStream:
    """Async iterator over one request's `RequestOutput`s (all its `n` choices, interleaved)."""

    def __init__(self, front: AsyncLLMEngine, request_id: str, n: int) -> None:
        self.request_id = request_id
        self._front = front
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self.n = n
        self._unfinished = n  # choices whose last output the consumer has not read yet
        self._finished_pushed = 0
        self._started = False
        self.done = False  # finished, failed or aborted

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self._unfinished == 0 or (self.done and self._queue.empty()):
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self.abort()
            raise
        if isinstance(item, BaseException):
            raise item
        if item.finished:
            self._unfinished -= 1
        return item

    def ready(self) -> list[RequestOutput]:
        """The outputs already made and not yet read, without waiting (a consumer that forwards
        them elsewhere sends them together); raises a failure that is next in line."""
        taken: list[RequestOutput] = []
        while self._unfinished and not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, BaseException):
                if taken:  # the outputs before it first; the failure (always last) on the next read
                    self._queue.put_nowait(item)
                    return taken
                raise item
            if item.finished:
                self._unfinished -= 1
            taken.append(item)
        return taken

    async def __aenter__(self) -> RequestStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.abort()

    def abort(self) -> None:
        """Stop generating (idempotent); the blocks are freed before the engine's next step."""
        if not self.done:
            self._front._release(self, aborted=True)

    def __del__(self) -> None:
        # A consumer that breaks out of `async for` and drops the stream still frees the blocks.
        if not self.done:
            with contextlib.suppress(Exception):  # at interpreter shutdown there is nothing to free
                self._front._release(self, aborted=True)

    # Called in the event loop by the step thread (through call_soon_threadsafe).
    def _push(self, outputs: list[RequestOutput]) -> None:
        if self.done:
            return
        if not self._started:
            self._started = True
            self._front._left_queue()
        for out in outputs:
            self._queue.put_nowait(out)
        self._finished_pushed += sum(1 for o in outputs if o.finished)
        if self._finished_pushed >= self.n:
            self._front._release(self, aborted=False)

    def _fail(self, error: BaseException) -> None:
        if not self.done:
            self._queue.put_nowait(error)
            self._front._release(self, aborted=False)


class AsyncLLMEngine:
    def __init__(
        self, engine: LLMEngine, max_waiting_requests: int | None = None, start: bool = True
    ) -> None:
        self.engine = engine
        self.max_waiting_requests = max_waiting_requests or engine.config.max_waiting_requests
        # Re-entrant: a dropped stream may be collected (and abort itself) while this thread holds it.
        self._lock = threading.RLock()
        self._active: dict[str, RequestStream] = {}
        self._num_waiting = 0
        self._incoming: deque[tuple[RequestStream, list[int], SamplingParams, LoraRequest | None, int]] = (
            deque()
        )
        self._aborts: deque[str] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    @classmethod
    def from_config(cls, config: EngineConfig, **options: Any) -> AsyncLLMEngine:
        return cls(LLMEngine(config), **options)

    @property
    def tokenizer(self) -> Tokenizer | None:
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llm-engine-step", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        """Stop the step thread; streams still open end with ServiceUnavailable."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.engine.close()
        with self._lock:
            streams = list(self._active.values())
        for stream in streams:
            error = ServiceUnavailable("the engine is shutting down", retry_after=1)
            with contextlib.suppress(RuntimeError):  # its event loop is already closed
                stream._loop.call_soon_threadsafe(stream._fail, error)

    def generate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
        lora: LoraRequest | None = None,
        priority: int = 0,
    ) -> RequestStream:
        """Admit a request (on the LoRA adapter `lora`, if given; `priority` as `LLMEngine.add_request`)
        and return its stream. Must be called from a running event loop."""
        if self._error is not None:
            raise InternalError("the engine has stopped after an error")
        self.engine.check_prompt(prompt_token_ids, params)
        request_id = request_id or f"req-{next(_ids)}"
        stream = RequestStream(self, request_id, params.n)
        with self._lock:
            if request_id in self._active:
                raise InvalidRequest(f"request id {request_id!r} is already in use", param="request_id")
            if self._num_waiting >= self.max_waiting_requests:
                stream.done = True
                raise ServiceUnavailable("the engine's request queue is full; retry shortly", retry_after=1)
            self._active[request_id] = stream
            self._num_waiting += 1
        self._incoming.append((stream, list(prompt_token_ids), params, lora, priority))
        self._wake.set()
        return stream

    @property
    def num_active(self) -> int:
        return len(self._active)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    # --- bookkeeping shared by both threads ------------------------------------------------------
    def _left_queue(self) -> None:
        with self._lock:
            self._num_waiting -= 1

    def _release(self, stream: RequestStream, aborted: bool) -> None:
        with self._lock:
            if stream.done:
                return
            stream.done = True
            if not stream._started:
                self._num_waiting -= 1
            self._active.pop(stream.request_id, None)
        if aborted:
            self._aborts.append(stream.request_id)
            self._wake.set()

    # --- the step thread -------------------------------------------------------------------------
    def _run(self) -> None:
        engine = self.engine
        streams: dict[str, RequestStream] = {}
        while not self._stopping:
            while self._incoming:
                stream, prompt, params, lora, priority = self._incoming.popleft()
                if stream.done:
                    continue
                try:
                    engine.add_request(stream.request_id, prompt, params, lora, priority)
                    streams[stream.request_id] = stream
                except Exception as exc:  # rejected after admission: tell that client only
                    stream._loop.call_soon_threadsafe(stream._fail, exc)
            while self._aborts:
                request_id = self._aborts.popleft()
                engine.abort(request_id)
                streams.pop(request_id, None)
            if not engine.has_unfinished_requests:
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                outputs = engine.step()
            except Exception as exc:
                log.exception("engine step failed")
                self._error = exc
                for stream in streams.values():
                    stream._loop.call_soon_threadsafe(stream._fail, InternalError(f"engine failure: {exc}"))
                return
            by_request: dict[str, list[RequestOutput]] = {}
            for out in outputs:
                by_request.setdefault(out.request_id, []).append(out)
            for request_id, outs in by_request.items():
                stream_for = streams.get(request_id)
                if stream_for is None:
                    continue
                if not engine.is_active(request_id):
                    streams.pop(request_id)
                stream_for._loop.call_soon_threadsafe(stream_for._push, outs)
