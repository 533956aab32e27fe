"""A PostgreSQL server of a test's own, to stop and start again: a throwaway cluster made with
Debian's server binaries (`/usr/lib/postgresql/<version>/bin`) in a temp folder, on a free port of
127.0.0.1, trust auth, removed afterwards. As root it runs as the `postgres` user (PostgreSQL
refuses to run as root), as `.ci/run` does; otherwise as the current user.

The test is skipped, saying why, where there are no such binaries (a laptop without PostgreSQL)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.serve_process import free_port

_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def server_binaries() -> Path | None:
    """The newest `/usr/lib/postgresql/<version>/bin` that holds initdb and pg_ctl."""
    found = [
        path
        for path in Path("/").glob(_BIN_GLOB.lstrip("/"))
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file()
    ]

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    return max(found, key=version) if found else None


class PostgresCluster:
    """One initialised cluster in `folder`; `url` reaches its `postgres` database."""

    def __init__(self, binaries: Path, folder: Path, user: pwd.struct_passwd | None) -> None:
        self.binaries = binaries
        self.folder = folder
        self.data = folder / "data"
        self.user = user  # None: the current user
        self.port = 0
        self.url = ""

    def _run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        user = {} if self.user is None else {"user": self.user.pw_uid, "group": self.user.pw_gid}
        return subprocess.run(
            [str(self.binaries / args[0]), *args[1:]],
            cwd=self.folder,  # a folder the server's user may read
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            **user,  # type: ignore[arg-type]
        )

    def init(self) -> None:
        done = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> float:
        """Start the server (on a free port the first time, the same port after); the seconds it took."""
        started = time.monotonic()
        first = not self.port
        for _ in range(5 if first else 1):
            if first:
                self._configure(free_port())
            log = str(self.folder / "server.log")
            done = self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "start")
            if done.returncode == 0:
                self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
                return time.monotonic() - started
            if "Address already in use" not in self.log_tail():
                break  # taken meanwhile (the first time): try another port
        raise RuntimeError(f"PostgreSQL did not start:\n{done.stdout}\n{done.stderr}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` ends every session at once, as an operator's stop does."""
        done = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed:\n{done.stdout}\n{done.stderr}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.folder / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _configure(self, port: int) -> None:
        conf = self.folder / "test.conf"
        conf.write_text(
            "listen_addresses = '127.0.0.1'\n"
            f"port = {port}\n"
            f"unix_socket_directories = '{self.folder / 'socket'}'\n"
            "max_connections = 100\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "dynamic_shared_memory_type = mmap\nlogging_collector = off\n"
        )
        self._chown(conf)
        settings = self.data / "postgresql.conf"
        include = f"include '{conf}'\n"
        text = settings.read_text()
        if include not in text:
            settings.write_text(text + include)
        self.port = port

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)


@contextmanager
def throwaway_postgres() -> Iterator[PostgresCluster]:
    """A started throwaway cluster, stopped and removed afterwards (also when the test fails)."""
    binaries = server_binaries()
    if binaries is None:
        pytest.skip(f"needs PostgreSQL's server binaries ({_BIN_GLOB}: initdb, pg_ctl); none are installed")
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no `postgres` user to run PostgreSQL as")
    folder = Path(tempfile.mkdtemp(prefix="openmaas-test-pg."))
    cluster = PostgresCluster(binaries, folder, user)
    try:
        folder.chmod(0o755)
        for name in ("data", "socket"):
            (folder / name).mkdir(mode=0o700)
            cluster._chown(folder / name)
        (folder / "server.log").touch()
        cluster._chown(folder / "server.log")
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if (cluster.data / "postmaster.pid").exists():
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
