"""Ctrl-C on `openmaas serve` (as `make run` in a terminal gets it: SIGINT to the whole process
group) while it starts ends it quietly: no traceback from it, its worker or the job forkserver."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _forkserver(server: psutil.Process) -> psutil.Process | None:
    for child in server.children(recursive=True):
        try:
            if "multiprocessing.forkserver" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_ctrl_c_while_the_job_forkserver_starts_prints_no_traceback(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(sys.path),
        "OPENMAAS_HOME": str(tmp_path / "home"),
        "OPENMAAS_PORT": str(_free_port()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "openmaas.cli.main", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        server = psutil.Process(process.pid)
        deadline = time.monotonic() + 120
        while (forkserver := _forkserver(server)) is None:
            assert process.poll() is None and time.monotonic() < deadline, "the forkserver never started"
            time.sleep(0.02)
        # It imports torch and the trainers for seconds before it serves: Ctrl-C lands in that.
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert "Traceback" not in output and "Error" not in output and "Warning" not in output, output
    assert process.returncode in (0, 3, 130), output  # 3: uvicorn stopped before it started
    _, alive = psutil.wait_procs([forkserver], timeout=60)
    assert not alive, "the job forkserver outlived the server"
