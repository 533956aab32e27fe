"""Performing what SDK methods describe (`calls.py`): `SyncSender` over `httpx.Client`, blocking,
and `AsyncSender` over `httpx.AsyncClient`, awaited.

These two classes are the only SDK code written twice, because reading a socket either blocks or
is awaited: each drives a method's steps (send a call, save a download, sleep), sending a call or
a download again when `retries.py` says it may, and reads a job's event stream. They know nothing
about any particular resource.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any, TypeVar

import httpx

from openmaas.schemas.jobs import JobEventPublic
from openmaas.sdk.calls import Call, Download, Sleep, Step, Steps
from openmaas.sdk.errors import APIConnectionError, error_for
from openmaas.sdk.events import EventStream, EventStreamParser
from openmaas.sdk.retries import Retries

T = TypeVar("T")


@contextmanager
def reaching(http: httpx.Client | httpx.AsyncClient) -> Iterator[None]:
    """A network failure becomes `APIConnectionError`."""
    try:
        yield
    except httpx.TransportError as exc:
        raise APIConnectionError(f"Cannot reach {http.base_url}: {exc}") from exc


def _content_length(response: httpx.Response) -> int:
    return int(response.headers.get("content-length", 0))


class SyncSender:
    def __init__(self, http: httpx.Client, retries: Retries) -> None:
        self.http = http
        self.retries = retries
        self.sleep: Callable[[float], Any] = time.sleep  # between polls and before a retry

    def perform(self, steps: Steps[T]) -> T:
        """Run a method's steps, each answer sent back into it, and return its result."""
        plan = iter(steps)
        with closing(plan):  # a failed step still runs the plan's `finally`s and `with` exits
            answer: Any = None
            while True:
                try:
                    step = plan.send(answer)
                except StopIteration as end:
                    return end.value
                answer = self._take(step)

    def _take(self, step: Step) -> Any:
        if isinstance(step, Sleep):
            self.sleep(step.seconds)
            return None
        act: Callable[[Any], Any] = self._download if isinstance(step, Download) else self._send
        with reaching(self.http):
            return self.retries.blocking(step, self.sleep)(act, step)

    def _send(self, call: Call[T]) -> T:
        upload = call.upload
        content = upload.chunks() if upload is not None else None
        return call.parse(self.http.send(call.request(self.http, content)))

    def _download(self, download: Download) -> Any:
        with self.http.stream("GET", download.path) as response:
            if response.status_code >= 400:
                response.read()
                raise error_for(response)
            total, done = _content_length(response), 0
            with open(download.dest, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    done += len(chunk)
                    if download.progress is not None:
                        download.progress(done, total)
        return download.dest

    def stream(self, events: EventStream) -> Iterator[JobEventPublic]:
        """Events as the server sends them, until the stream's end."""
        parser = EventStreamParser()
        with (
            reaching(self.http),
            self.http.stream("GET", events.path, params=events.params, timeout=None) as response,
        ):
            if response.status_code >= 400:
                response.read()
                raise error_for(response)
            for line in response.iter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event
                if parser.done:
                    return


class AsyncSender:
    """`SyncSender`, awaited."""

    def __init__(self, http: httpx.AsyncClient, retries: Retries) -> None:
        self.http = http
        self.retries = retries
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    async def perform(self, steps: Steps[T]) -> T:
        plan = iter(steps)
        with closing(plan):
            answer: Any = None
            while True:
                try:
                    step = plan.send(answer)
                except StopIteration as end:
                    return end.value
                answer = await self._take(step)

    async def _take(self, step: Step) -> Any:
        if isinstance(step, Sleep):
            await self.sleep(step.seconds)
            return None
        act: Callable[[Any], Awaitable[Any]] = self._download if isinstance(step, Download) else self._send
        with reaching(self.http):
            return await self.retries.awaited(step, self.sleep)(act, step)

    async def _send(self, call: Call[T]) -> T:
        upload = call.upload
        content = upload.async_chunks() if upload is not None else None
        return call.parse(await self.http.send(call.request(self.http, content)))

    async def _download(self, download: Download) -> Any:
        async with self.http.stream("GET", download.path) as response:
            if response.status_code >= 400:
                await response.aread()
                raise error_for(response)
            total, done = _content_length(response), 0
            with open(download.dest, "wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                    done += len(chunk)
                    if download.progress is not None:
                        download.progress(done, total)
        return download.dest

    async def stream(self, events: EventStream) -> AsyncIterator[JobEventPublic]:
        parser = EventStreamParser()
        with reaching(self.http):
            async with self.http.stream("GET", events.path, params=events.params, timeout=None) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_for(response)
                async for line in response.aiter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield event
                    if parser.done:
                        return
