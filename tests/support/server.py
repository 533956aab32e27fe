"""A real uvicorn server on a free loopback port, in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """uvicorn's server, noticing `should_exit` within 10 ms instead of its 100 ms tick (a tenth
    of a second at the end of every test that runs a server)."""

    async def main_loop(self) -> None:
        ticks = 0
        while not await self.on_tick(ticks):
            await asyncio.sleep(0.01)
            ticks = (ticks + 1) % 10  # on_tick refreshes the Date header when this is 0: every 0.1 s


@contextmanager
def running_server(app: Any, http: Any = "auto") -> Iterator[str]:
    """`app` served until the block ends; `http` is uvicorn's HTTP protocol (`openmaas serve` runs
    `limited_http_protocol`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, http=http, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
