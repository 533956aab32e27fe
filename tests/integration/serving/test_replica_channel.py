"""The direct line from an API server to a Ray replica (serving/replica_channel.py), over real
loopback sockets and without Ray: answers find their calls, the token guards the pickles, and a
replica that goes away fails its calls in flight with `ChannelLost` at once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from openmaas import errors
from openmaas.serving import replica_channel
from openmaas.serving.replica_channel import ChannelLost, ChannelServer, ReplicaChannel

HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def _connected() -> AsyncIterator[tuple[ChannelServer, ReplicaChannel]]:
    """A replica's channel serving `_echo_after`, and a connection to it; both closed after."""
    server = await ChannelServer.start(_echo_after, HOST)
    channel = await ReplicaChannel.open(server.address)
    try:
        yield server, channel
    finally:
        channel.close()
        server.close()


def _on_a_loop(case: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """A test of `case` run on its own event loop (pytest takes the wrapper's signature)."""

    @functools.wraps(case)
    def test(*args: Any, **kwargs: Any) -> None:
        asyncio.run(case(*args, **kwargs))

    return test


async def _echo_after(message: Any) -> Any:
    """Answers `("echo", value, delay)` after `delay` seconds; fails on `("fail", ...)`."""
    kind, value, delay = message
    await asyncio.sleep(delay)
    if kind == "fail":
        raise KeyError(value)
    return value


@_on_a_loop
async def test_many_calls_in_flight_each_get_their_own_answer_in_any_order() -> None:
    async with _connected() as (_server, channel):
        # Later calls answer first: each answer still reaches its own caller.
        delays = [0.05 - i * 0.001 for i in range(40)]
        answers = await asyncio.gather(*(channel.call(("echo", i, d)) for i, d in enumerate(delays)))
        assert answers == list(range(40))
        # Our errors travel as values, whole (a replica answers a request with its error).
        error = errors.ServiceUnavailable("full", retry_after=2, code="queue_full")
        back = await channel.call(("echo", error, 0))
        assert isinstance(back, errors.ServiceUnavailable) and back.to_dict() == error.to_dict()
        assert back.headers == {"Retry-After": "2"}


@_on_a_loop
async def test_a_failing_handler_raises_for_its_call_only() -> None:
    async with _connected() as (_server, channel):
        with pytest.raises(RuntimeError, match="KeyError: 'boom'"):
            await channel.call(("fail", "boom", 0))
        assert await channel.call(("echo", "still open", 0)) == "still open"


@_on_a_loop
async def test_a_wrong_token_is_refused_before_anything_is_read() -> None:
    seen: list[Any] = []

    async def handler(message: Any) -> Any:
        seen.append(message)
        return message

    server = await ChannelServer.start(handler, HOST)
    wrong = dataclasses.replace(server.address, token=b"x" * replica_channel.TOKEN_BYTES)
    channel = await ReplicaChannel.open(wrong)
    try:
        with pytest.raises(ChannelLost):
            await asyncio.wait_for(channel.call("hello"), 5)
        assert seen == [] and channel.closed
    finally:
        channel.close()
        server.close()


@_on_a_loop
async def test_a_replica_going_away_fails_its_calls_in_flight_at_once() -> None:
    async with _connected() as (server, channel):
        waiting = [asyncio.ensure_future(channel.call(("echo", i, 30))) for i in range(5)]
        await asyncio.sleep(0.1)  # the calls reached the replica
        server.close()
        done, _ = await asyncio.wait(waiting, timeout=5)
        assert len(done) == 5
        assert all(isinstance(call.exception(), ChannelLost) for call in done)
        assert channel.closed
        with pytest.raises(ChannelLost):  # and so does any later call, without sending
            await channel.call(("echo", 1, 0))


@_on_a_loop
async def test_closing_from_another_thread_fails_the_calls_in_flight() -> None:
    """A replica pool is closed from the replica loader's thread, not the event loop's."""
    async with _connected() as (_server, channel):
        waiting = asyncio.ensure_future(channel.call(("echo", 1, 30)))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(channel.close)
        with pytest.raises(ChannelLost, match="closed"):
            await asyncio.wait_for(waiting, 5)


@_on_a_loop
async def test_an_unreachable_replica_is_a_lost_channel() -> None:
    server = await ChannelServer.start(_echo_after, HOST)
    address = server.address
    server.close()
    await asyncio.sleep(0.05)
    with pytest.raises(ChannelLost, match="cannot reach the replica"):
        await ReplicaChannel.open(address)


@_on_a_loop
async def test_an_oversized_frame_drops_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_channel, "MAX_FRAME", 1000)
    async with _connected() as (server, channel):
        with pytest.raises(ValueError, match="over the channel's 1000-byte limit"):
            await channel.call(("echo", "x" * 2000, 0))  # refused before it is sent
        assert await channel.call(("echo", "small", 0)) == "small"
        # A peer announcing a larger frame is cut off before the server reads it.
        reader, writer = await asyncio.open_connection(HOST, server.address.port)
        writer.write(server.address.token + replica_channel._HEADER.pack(1, 1001))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
