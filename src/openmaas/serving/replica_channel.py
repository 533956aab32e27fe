"""A direct line from an API server to a replica actor, for the calls where Ray's own cost shows.

A Ray actor call costs about 1.5 ms of round trip on one core of this project's 2-core machine
(two gRPC hops and three threads between two event loops, measured with an empty method), more
than a tabular model takes to answer. So a /predict replica (serving/ray_replicas.py) also listens
on a TCP port of its node, and API servers send predictions there: one connection per API server
and replica, many calls in flight on it, each a frame `(call id, length)` and a pickle. Ray keeps
everything else: placing, starting, restarting and killing the actor, and telling the API server
the replica's address and the token that opens it (through the actor handle, so over Ray's own
authenticated channel). A connection must present the token before anything it sends is read as
a pickle: the line is as trusted as Ray's, which pickles every call too.

Nothing here imports Ray: a lost connection raises `ChannelLost`, and the replica pool
(serving/ray_pool.py) asks Ray whether the actor died.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import pickle
import secrets
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("openmaas.serving")

_HEADER = struct.Struct("!QI")  # call id, payload length
TOKEN_BYTES = 32
MAX_FRAME = 1 << 30  # a frame larger than this is a broken peer, not a request
AUTH_TIMEOUT_S = 5.0
# Answers written but not yet sent, per connection, before the writer waits for the socket.
WRITE_BUFFER = 4 << 20

Handler = Callable[[Any], Awaitable[Any]]


class ChannelLost(ConnectionError):
    """The connection to a replica closed or broke: calls on it may or may not have run."""


@dataclass(frozen=True)
class ChannelAddress:
    """Where a replica listens, and the token it takes."""

    host: str
    port: int
    token: bytes


class ChannelServer:
    """A replica's listening side: each call's message goes to `handler`, whose answer (or the
    error it raises, as `sendable` makes it) goes back under the call's id."""

    # Set by `start`, once listening.
    _server: asyncio.Server
    address: ChannelAddress

    def __init__(self, handler: Handler, token: bytes) -> None:
        self._handler = handler
        self._token = token
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    async def start(cls, handler: Handler, host: str) -> ChannelServer:
        """Listen on a free port of `host` (the node's address other nodes reach)."""
        channel = cls(handler, secrets.token_bytes(TOKEN_BYTES))
        channel._server = await asyncio.start_server(channel._serve, host, 0)
        port = channel._server.sockets[0].getsockname()[1]
        channel.address = ChannelAddress(host, port, channel._token)
        return channel

    def close(self) -> None:
        """Stop listening and drop every connection (their calls in flight are lost to callers)."""
        self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            token = await asyncio.wait_for(reader.readexactly(TOKEN_BYTES), AUTH_TIMEOUT_S)
            if not hmac.compare_digest(token, self._token):
                log.warning("a connection to a replica's channel presented a wrong token; closed")
                return
            while True:
                call_id, message = await _read_frame(reader)
                task = asyncio.ensure_future(self._answer(writer, call_id, message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            return  # the API server went away (or never said who it was)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, call_id: int, message: bytes) -> None:
        try:
            answer: tuple[bool, Any] = (True, await self._handler(pickle.loads(message)))
        except Exception as exc:  # the handler's own failure: the caller raises it
            answer = (False, RuntimeError(f"{type(exc).__name__}: {exc}"))
        if writer.is_closing():
            return
        _write_frame(writer, call_id, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        if writer.transport.get_write_buffer_size() > WRITE_BUFFER:
            with contextlib.suppress(ConnectionError):
                await writer.drain()


class ReplicaChannel:
    """An API server's connection to one replica; lives on the API server's event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._loop = asyncio.get_running_loop()
        self._writer = writer
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._lost: ChannelLost | None = None
        self._reading = asyncio.ensure_future(self._read(reader))

    @classmethod
    async def open(cls, address: ChannelAddress, timeout_s: float = 5.0) -> ReplicaChannel:
        """Connect and present the token; `ChannelLost` if the replica cannot be reached."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address.host, address.port), timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise ChannelLost(f"cannot reach the replica at {address.host}:{address.port}: {exc}") from None
        writer.write(address.token)
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._lost is not None

    async def call(self, message: Any) -> Any:
        """Send `message` to the replica's handler and wait for its answer (raised if it is an
        error of the handler itself); `ChannelLost` if the connection goes first."""
        if self._lost is not None:
            raise self._lost
        call_id = next(self._ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = answer
        try:
            _write_frame(self._writer, call_id, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
            if self._writer.transport.get_write_buffer_size() > WRITE_BUFFER:
                await self._writer.drain()
            ok, value = await answer
        except ConnectionError as exc:
            if not isinstance(exc, ChannelLost):
                self._close(ChannelLost(f"the connection to the replica broke: {exc}"))
            raise (self._lost or exc) from None
        finally:
            self._pending.pop(call_id, None)
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Close it, from any thread (a pool is closed from the replica loader's)."""
        lost = ChannelLost("the channel was closed")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._close(lost)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._close, lost)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                call_id, payload = await _read_frame(reader)
                answer = self._pending.get(call_id)
                if answer is None or answer.done():
                    continue  # its caller stopped waiting
                try:
                    answer.set_result(pickle.loads(payload))
                except Exception as exc:  # e.g. a class this process cannot import
                    answer.set_exception(RuntimeError(f"the replica's answer could not be read: {exc!r}"))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._close(ChannelLost(f"the replica closed its connection: {exc or 'end of stream'}"))
        except asyncio.CancelledError:
            self._close(ChannelLost("the channel was closed"))
            raise

    def _close(self, lost: ChannelLost) -> None:
        if self._lost is not None:
            return
        self._lost = lost
        self._writer.close()
        if self._reading is not asyncio.current_task():
            self._reading.cancel()
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(lost)


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    call_id, length = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if length > MAX_FRAME:
        raise ConnectionError(f"a frame of {length} bytes is over the {MAX_FRAME}-byte limit")
    return call_id, await reader.readexactly(length)


def _write_frame(writer: asyncio.StreamWriter, call_id: int, payload: bytes) -> None:
    if len(payload) > MAX_FRAME:
        raise ValueError(f"a message of {len(payload)} bytes is over the channel's {MAX_FRAME}-byte limit")
    writer.write(_HEADER.pack(call_id, len(payload)) + payload)
