"""`openmaas serve` as a real subprocess on a test platform's home and database, on a free port:
started, waited for until ready, killed with SIGKILL and started again on the same database."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from openmaas.config import Settings
from tests.support.workers import start_command

# No job worker in the server (these tests need none); no billing chores in the middle of a test.
SERVER_ENV = {"OPENMAAS_WORKER_IN_PROCESS": "false", "OPENMAAS_BILLING_SCHEDULER_INTERVAL_S": "0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """One `openmaas serve` at a time on `settings`; `start` again after `kill` is a restart, on
    the same port (as clients know it)."""

    def __init__(
        self, settings: Settings, log: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.settings = settings
        self.log = log
        self.env = {**SERVER_ENV, **(env or {})}
        self.args = args  # of `openmaas serve`
        self.process: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> float:
        """Start the server and wait until `/readyz` answers 200; the seconds that took."""
        started = time.monotonic()
        self.launch()
        self.wait_ready(started + timeout)
        return time.monotonic() - started

    def launch(self) -> None:
        """Start the server without waiting for it (`wait_ready`): servers started together load
        their imports side by side."""
        env = {**self.env, "OPENMAAS_HOST": "127.0.0.1", "OPENMAAS_PORT": str(self.port)}
        self.process = start_command("serve", self.settings, self.log, env, args=self.args)

    def wait_ready(self, deadline: float) -> None:
        """Poll until `/readyz` answers 200; fail if the server exits or `deadline` (monotonic) passes."""
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"openmaas serve exited with {code}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"openmaas serve was not ready in time:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, nothing written after this instant."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def serve_process(settings: Settings, log: Path, env: dict[str, str] | None = None) -> Iterator[ServeProcess]:
    """A started `ServeProcess`, stopped (if still running) afterwards."""
    server = ServeProcess(settings, log, env)
    try:
        server.start()
        yield server
    finally:
        server.stop()
