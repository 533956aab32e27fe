"""Runs batches in the API server's process, beside the deployments that answer their lines.

Why here and not in a job process: the deployments' engines live in the API server, and a line
is one more request to them. Run here, a line goes through the same inference use-case as a live
request (`Inference.batch_line`), metered in the batch units under the line's own request id;
from a job process it would need an internal credential, the server's address and a way to mark
a request as batch work on the hot path.

A batch is held with a lease on its row, like a job: a server claims it, extends the lease as it
writes progress, and another server (or this one restarted) takes it over once the lease runs
out. Each answered line is written to `batch_lines` (and counted in `request_counts`) every
`flush_s`; a batch resumed after a crash runs only the lines not written yet, and a line that was
served but not written is metered once, since its usage event id is the line's request id
(`<batch id>-<line>`). When every line is answered, the lines become the output file (answers) and
the error file (failed lines, and on expiry the lines never sent), in input order.

Lines go to the engine a few at a time — half the engine's `max_num_seqs` — so that live
requests always find room in its running batch, and at a lower priority (`BATCH_PRIORITY`): the
engine admits the live requests waiting before the lines waiting, never preempting a running line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from anyio import to_thread
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.clock import Clock
from openmaas.datasets.files import get_file, store_output_file
from openmaas.db.database import Database
from openmaas.ids import new_id
from openmaas.serving.batches.lines import BatchRequest, expired_line, output_line, parse_body, read_input
from openmaas.serving.batches.tables import ACTIVE, Batch, BatchLine
from openmaas.serving.directory import ServedModel
from openmaas.serving.inference import Inference
from openmaas.serving.replicas import ReplicaManager
from openmaas.storage import ArtifactStore
from openmaas.tasks import TEXT_GENERATION
from openmaas.tenancy import scopes
from openmaas.tenancy.auth import Principal

log = logging.getLogger("openmaas.batches")

_CLAIM_AT_ONCE = 4


@dataclass(frozen=True)
class RunnerTimes:
    poll_s: float = 5.0  # how often to look for batches no server holds (a new one wakes it at once)
    lease_s: float = 60.0  # how long a claim holds without progress being written
    flush_s: float = 0.5  # how often answered lines are written


@dataclass
class _Run:
    """A batch being run here: what its workers share with the loop that writes their answers."""

    batch_id: str
    endpoint: str
    principal: Principal
    expires_at: datetime
    pending: list[tuple[int, bool, dict[str, Any]]] = field(default_factory=list)
    stop: bool = False  # send no more lines (cancelled, expired, lease lost, shutting down)


class BatchRunner:
    def __init__(
        self,
        db: Database,
        store: ArtifactStore,
        replicas: ReplicaManager,
        inference: Inference,
        clock: Clock,
        times: RunnerTimes | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._replicas = replicas
        self._inference = inference
        self._clock = clock
        self.times = times or RunnerTimes()
        self.id = f"{socket.gethostname()}:{os.getpid()}:{new_id('run_')[-8:]}"
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start looking for batches; call on the server's event loop."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._poller = self._loop.create_task(self._poll())

    def wake(self) -> None:
        """Look for batches now (a batch was created); callable from any thread."""
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wakeup.set)

    async def close(self) -> None:
        """Stop: lines in flight are dropped unanswered, and the batches are released at once
        for the next server to resume (no lease to wait out)."""
        tasks = [t for t in (self._poller, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._running:
            await to_thread.run_sync(self._release, list(self._running))
        self._running.clear()

    async def _poll(self) -> None:
        assert self._wakeup is not None
        while True:
            try:
                claimed = await to_thread.run_sync(self._claim, set(self._running))
            except Exception:
                log.exception("looking for batches failed; retrying")
                claimed = []
            for batch_id in claimed:
                self._running[batch_id] = asyncio.get_running_loop().create_task(self._run_guarded(batch_id))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.times.poll_s)
            self._wakeup.clear()

    def _claim(self, running: set[str]) -> list[str]:
        """Take up to a few batches no live server holds; a new one becomes `in_progress`."""
        now = self._clock.now()
        claimed: list[str] = []
        with self._db.session() as session:
            candidates = session.scalars(
                select(Batch.id)
                .where(Batch.status.in_(ACTIVE))
                .where((Batch.runner.is_(None)) | (Batch.lease_until < now))
                .order_by(Batch.id)
                .limit(_CLAIM_AT_ONCE + len(running))
            ).all()
            for batch_id in candidates:
                if batch_id in running or len(claimed) >= _CLAIM_AT_ONCE:
                    continue
                taken = session.execute(
                    update(Batch)
                    .where(Batch.id == batch_id, Batch.status.in_(ACTIVE))
                    .where((Batch.runner.is_(None)) | (Batch.lease_until < now))
                    .values(runner=self.id, lease_until=now + timedelta(seconds=self.times.lease_s))
                )
                if taken.rowcount:  # type: ignore[attr-defined]
                    claimed.append(batch_id)
            for row in session.scalars(
                select(Batch).where(Batch.id.in_(claimed), Batch.status == "validating")
            ):
                row.status, row.in_progress_at = "in_progress", now
        return claimed

    def _release(self, batch_ids: list[str]) -> None:
        with self._db.session() as session:
            session.execute(
                update(Batch)
                .where(Batch.id.in_(batch_ids), Batch.runner == self.id)
                .values(runner=None, lease_until=None)
            )

    async def _run_guarded(self, batch_id: str) -> None:
        try:
            await self._run(batch_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch %s failed; another try follows when its lease runs out", batch_id)
        finally:
            self._running.pop(batch_id, None)

    async def _run(self, batch_id: str) -> None:
        loaded = await to_thread.run_sync(self._load, batch_id)
        if loaded is None:
            return
        row, todo = loaded
        principal = Principal(
            key_id=row.api_key_id or "",
            org_id=row.org_id,
            scopes=frozenset({scopes.INFERENCE}),
            expires_at=None,
        )
        run = _Run(batch_id, row.endpoint, principal, row.expires_at)
        status: str | None = row.status
        if status == "in_progress" and self._clock.now() >= run.expires_at:
            status = "expired"
        if status == "in_progress" and todo:
            served = self._replicas.acquire_loaded(row.org_id, row.model or "")
            lines = iter(todo)
            workers = [asyncio.create_task(self._work(run, lines)) for _ in range(_concurrency(served))]
            try:
                status = await self._write_progress(run, workers)
            finally:
                for worker in workers:
                    worker.cancel()
        if status is None:  # the lease was lost: the batch is another server's now
            return
        await to_thread.run_sync(self._finalize, run, status, todo)

    def _load(self, batch_id: str) -> tuple[Batch, list[BatchRequest]] | None:
        """The batch and its lines not answered yet (all of them, or none once it ends)."""
        with self._db.session() as session:
            row = session.get(Batch, batch_id)
            if row is None or row.runner != self.id:
                return None
            done = set(session.scalars(select(BatchLine.line).where(BatchLine.batch_id == batch_id)))
            session.expunge(row)
            try:
                stored = get_file(session, row.org_id, row.input_file_id)
            except errors.NotFound:
                stored = None
        if stored is None:
            self._fail(batch_id, "input_file_missing", f"The input file {row.input_file_id!r} was deleted.")
            return None
        with self._store.reading(stored.path) as local:
            requests = read_input(local, row.endpoint).requests
        return row, [r for r in requests if r.line not in done]

    def _fail(self, batch_id: str, code: str, message: str) -> None:
        with self._db.session() as session:
            row = session.get(Batch, batch_id)
            if row is not None and row.runner == self.id:
                row.status, row.failed_at = "failed", self._clock.now()
                row.errors = [{"code": code, "message": message, "param": "input_file_id", "line": None}]
                row.runner = row.lease_until = None

    async def _work(self, run: _Run, lines: Iterator[BatchRequest]) -> None:
        """Answer lines one after another until none is left or the run stops."""
        for request in lines:
            if run.stop:
                return
            answered = await self._answer(run, request)
            if answered is not None:
                run.pending.append(answered)

    async def _answer(self, run: _Run, request: BatchRequest) -> tuple[int, bool, dict[str, Any]] | None:
        """The line's output (or error) object; None if the run stopped before it was served."""
        request_id = f"{run.batch_id}-{request.line}"
        try:
            body = parse_body(run.endpoint, request.body)
            while True:
                try:
                    answer = await self._inference.batch_line(run.principal, body, request_id)
                    return request.line, True, output_line(request, request_id, 200, answer)
                except (errors.RateLimited, errors.ServiceUnavailable) as busy:
                    # Live traffic comes first, and a model may be loading: wait, then send again.
                    if run.stop:
                        return None
                    await asyncio.sleep(max(float(busy.retry_after or 1.0), 0.05))
                    if run.stop:
                        return None
        except errors.OpenMaaSError as refused:
            return request.line, False, output_line(request, request_id, refused.status, refused.to_dict())
        except Exception as exc:
            log.exception("batch %s line %d failed", run.batch_id, request.line)
            failure = errors.InternalError(f"The request failed: {type(exc).__name__}.")
            return request.line, False, output_line(request, request_id, failure.status, failure.to_dict())

    async def _write_progress(self, run: _Run, workers: list[asyncio.Task[None]]) -> str | None:
        """Write answered lines every `flush_s` until the workers end; the batch's status then
        (`in_progress`, `cancelling`, or `expired` once its window passed), or None if the lease
        was lost."""
        status: str | None = "in_progress"
        while True:
            done, _ = await asyncio.wait(workers, timeout=self.times.flush_s)
            pending, run.pending = run.pending, []
            status = await to_thread.run_sync(self._flush, run.batch_id, pending)
            if status is None:
                run.stop = True
                return None
            if status == "cancelling" or self._clock.now() >= run.expires_at:
                run.stop = True
            if len(done) == len(workers):
                break
        for worker in workers:
            worker.result()  # a worker's own failure surfaces here
        if run.pending:
            status = await to_thread.run_sync(self._flush, run.batch_id, run.pending)
            run.pending = []
        if status == "in_progress" and self._clock.now() >= run.expires_at:
            return "expired"
        return status

    def _flush(self, batch_id: str, answered: list[tuple[int, bool, dict[str, Any]]]) -> str | None:
        """Write answered lines and their counts and extend the lease, in one transaction; the
        batch's status, or None when this server no longer holds it."""
        with self._db.session() as session:
            row = session.get(Batch, batch_id)
            if row is None or row.runner != self.id:
                return None
            for line, ok, result in answered:
                session.add(BatchLine(batch_id=batch_id, line=line, ok=ok, result=result))
            row.completed += sum(1 for _, ok, _ in answered if ok)
            row.failed += sum(1 for _, ok, _ in answered if not ok)
            row.lease_until = self._clock.now() + timedelta(seconds=self.times.lease_s)
            return row.status

    def _finalize(self, run: _Run, status: str, todo: list[BatchRequest]) -> None:
        """Write the output and error files and end the batch: `completed`, `cancelled`, or
        `expired` (its unsent lines in the error file)."""
        now = self._clock.now()
        with self._db.session() as session:  # seen while the files are written
            row = session.get(Batch, run.batch_id)
            if row is None or row.runner != self.id:
                return
            row.finalizing_at = row.finalizing_at or now
            if status != "cancelling":
                row.status = "finalizing"
        with self._db.session() as session:
            row = session.get(Batch, run.batch_id)
            if row is None or row.runner != self.id:
                return
            lines = session.scalars(
                select(BatchLine).where(BatchLine.batch_id == run.batch_id).order_by(BatchLine.line)
            ).all()
            answered = {line.line for line in lines}
            expired = [r for r in todo if r.line not in answered] if status == "expired" else []
            with tempfile.TemporaryDirectory(prefix="batch-") as folder:
                output = [line.result for line in lines if line.ok]
                failed = [line.result for line in lines if not line.ok] + [
                    expired_line(run.batch_id, r) for r in expired
                ]
                row.output_file_id = self._file(session, row, Path(folder, "output.jsonl"), output, now)
                row.error_file_id = self._file(session, row, Path(folder, "errors.jsonl"), failed, now)
            row.failed += len(expired)
            ended = {"cancelling": "cancelled", "expired": "expired"}.get(status, "completed")
            row.status = ended
            setattr(row, f"{ended}_at", now)
            row.runner = row.lease_until = None
            session.execute(delete(BatchLine).where(BatchLine.batch_id == run.batch_id))

    def _file(
        self, session: Session, row: Batch, path: Path, objects: list[dict[str, Any]], now: datetime
    ) -> str | None:
        if not objects:
            return None
        with open(path, "wb") as out:
            for obj in objects:
                out.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        stored = store_output_file(
            session,
            self._store,
            org_id=row.org_id,
            purpose="batch_output",
            filename=f"{row.id}_{path.stem}.jsonl",
            source=path,
            now=now,
        )
        return stored.id


def _concurrency(served: ServedModel | None) -> int:
    """Lines in flight at once: half the engine's concurrency, leaving the rest to live traffic."""
    runtime = served.runtime if served is not None else None
    if runtime is None or runtime.task != TEXT_GENERATION:
        return 2
    return max(1, runtime.max_num_seqs // 2)
