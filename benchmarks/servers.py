"""Starting servers under test as subprocesses pinned to a CPU, and waiting for their port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def pin_to(cpu: int) -> None:
    """Pin this process (the load generator) to one CPU, if the machine has it."""
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


@contextmanager
def server_process(
    argv: Sequence[str],
    port: int,
    *,
    cpu: int | None,
    env: dict[str, str] | None = None,
    wait_s: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    command = list(argv)
    if cpu is not None and cpu < (os.cpu_count() or 1):
        command = ["taskset", "-c", str(cpu), *command]
    # The server's log goes to a file that nothing has to drain: a pipe nobody reads fills after
    # 64 KB and then blocks a server that logs every request.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=log
        )
        try:
            try:
                wait_for_port(port, wait_s)
            except RuntimeError as error:
                log.seek(0)
                raise RuntimeError(
                    f"{error}; its log:\n{log.read()[-3000:].decode(errors='replace')}"
                ) from None
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


PYTHON = sys.executable
