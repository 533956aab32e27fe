"""The dynamic batcher of one deployment: merges concurrent requests into batches for its replicas.

Requests (`Job`s, each a list of rows) wait in one bounded queue; each replica has one worker
thread that takes the queued jobs up to `max_batch_size` rows, runs them as one batch off the event
loop, and hands every job its own slice of the results (order kept). A batch that raises is re-run
job by job, so one bad request fails alone.

Batches form without adding latency when the server is idle: a worker starts at once with what is
queued, and requests that arrive while it computes form the next batch. Under concurrent load it
waits up to `max_wait_ms` for as many rows as its previous batch held, which keeps batches full
instead of alternating between big and tiny ones.

A request of more rows than `max_batch_size` (a `LargeJob`) takes one place in the queue like any
other, and workers take it in slices of at most `max_batch_size` rows — filling a batch, alongside
smaller requests — putting what is left of it back at the end of the queue, so requests behind it
take turns with it rather than wait for all of it. It answers once every slice has, in order; a
slice that fails fails the request, its error renumbered to the request's rows (`Renumbered`).
A batcher made with `split=False` runs every request whole instead (the explainer's queue).

A full queue answers 503 (`ServiceUnavailable` with `Retry-After`); a job past its deadline is
dropped unrun and answers 504; a job whose client went away is dropped unrun. This module knows
nothing of HTTP or models: `run_batch(replica, rows, options)` is given by the runtime.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from openmaas import errors
from openmaas.histogram import Histogram

log = logging.getLogger("openmaas.serving.batcher")

# (replica index, the batch's rows, each row's job options) → one result per row, in order.
RunBatch = Callable[[int, list[Any], list[Any]], Sequence[Any]]


class ReplicaClosed(errors.ServiceUnavailable):
    """The replica stopped taking work (it is being replaced); the caller may retry elsewhere."""

    default_code = "replica_closed"


class ClientGone(errors.OpenMaaSError):
    """The client disconnected before its job ran; nobody is left to answer."""

    status = 499  # nginx's "client closed request": it only shows in metrics
    default_code = "client_closed_request"

    def __init__(self) -> None:
        super().__init__("The client closed the connection before its request ran.")


# Buckets of the batch histograms (`/metrics`): rows per batch, and seconds.
BATCH_ROWS_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SECONDS_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class BatchStats:
    """Counters a test or `/metrics` reads: how many batches ran and how many rows they held."""

    batches: int = 0
    rows: int = 0
    jobs: int = 0
    max_rows: int = 0
    multi_job_batches: int = 0  # batches that merged more than one request
    split_batches: int = 0  # merged batches that failed and were re-run request by request
    rejected: int = 0  # queue full
    expired: int = 0  # past their deadline before they ran
    cancelled: int = 0  # their client went away before they ran
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))
    # For `/metrics`: rows per batch, seconds a batch ran (the model's latency), and seconds each
    # request waited in the queue before its batch ran.
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_ROWS_BOUNDS))
    batch_seconds: Histogram = field(default_factory=lambda: Histogram(SECONDS_BOUNDS))
    queue_seconds: Histogram = field(default_factory=lambda: Histogram(SECONDS_BOUNDS))


@runtime_checkable
class Renumbered(Protocol):
    """An error about rows of the batch it was raised for (their index in it); `shifted` gives
    the same error for a slice of a larger request whose first row is the request's row `offset`."""

    def shifted(self, offset: int) -> BaseException: ...


@dataclass(eq=False, slots=True)
class Job:
    rows: list[Any]
    options: Any
    deadline: float  # time.monotonic()
    future: asyncio.Future[list[Any]]
    loop: asyncio.AbstractEventLoop
    gone: Callable[[], bool] | None = None
    enqueued: float = 0.0

    # On the event loop only, below.

    def answer(self, results: list[Any]) -> None:
        if not self.future.done():
            self.future.set_result(results)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(eq=False, slots=True)
class LargeJob(Job):
    """A request of more rows than a batch: queued once, run as `Slice`s."""

    taken: int = 0  # rows handed out in slices (workers, under the batcher's lock)
    answers: list[Any] = field(default_factory=list)  # one per row, filled in by its slices
    answered: int = 0


@dataclass(eq=False, slots=True)
class Slice(Job):
    """Rows `offset`… of a `LargeJob`, run as a job of their own; shares its future."""

    whole: LargeJob | None = None
    offset: int = 0

    def answer(self, results: list[Any]) -> None:
        whole = self.whole
        assert whole is not None
        if whole.future.done():
            return
        whole.answers[self.offset : self.offset + len(results)] = results
        whole.answered += len(results)
        if whole.answered == len(whole.rows):
            whole.future.set_result(whole.answers)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc.shifted(self.offset) if isinstance(exc, Renumbered) else exc)


class Batcher:
    def __init__(
        self,
        run_batch: RunBatch,
        *,
        replicas: int = 1,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        name: str = "batcher",
        split: bool = True,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max(1, max_batch_size)
        self._split = split
        self.max_wait_s = max(0.0, max_wait_ms) / 1000
        self.max_queue = max(1, max_queue)
        self.stats = BatchStats()
        self._queue: deque[Job] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._closing = False
        self._last_rows = [1] * replicas
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(replicas)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(
        self, rows: list[Any], options: Any, deadline: float, gone: Callable[[], bool] | None = None
    ) -> asyncio.Future[list[Any]]:
        """Queue one request's rows; await the returned future for their results (in order).

        Call from the event loop. Raises `ServiceUnavailable` at once when the queue is full."""
        loop = asyncio.get_running_loop()
        if len(rows) > self.max_batch_size and self._split:
            job: Job = LargeJob(
                rows,
                options,
                deadline,
                loop.create_future(),
                loop,
                gone,
                time.monotonic(),
                answers=[None] * len(rows),
            )
        else:
            job = Job(rows, options, deadline, loop.create_future(), loop, gone, time.monotonic())
        with self._ready:
            if self._closing:
                raise ReplicaClosed("This model replica is shutting down; retry.", retry_after=1)
            if len(self._queue) >= self.max_queue:
                self.stats.rejected += 1
                raise errors.ServiceUnavailable(
                    "This deployment's request queue is full; retry shortly.",
                    retry_after=1,
                    code="queue_full",
                )
            self._queue.append(job)
            self._ready.notify()
        return job.future

    async def call(
        self,
        rows: list[Any],
        options: Any,
        *,
        timeout_s: float,
        gone: Callable[[], bool] | None = None,
    ) -> list[Any]:
        """Submit and wait: the rows' results, or 504 once `timeout_s` passes (the job is dropped)."""
        future = self.submit(rows, options, time.monotonic() + timeout_s, gone)
        timer = future.get_loop().call_later(timeout_s, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs, finish (drain) the queued ones, then stop the workers."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    # Worker side: everything below runs in the replica threads.

    def _work(self, replica: int) -> None:
        while True:
            batch = self._take(replica)
            if batch is None:
                return
            if batch:
                self._run(replica, batch)

    def _take(self, replica: int) -> list[Job] | None:
        """The next batch of live jobs (possibly empty when all were dropped); None when closed."""
        with self._ready:
            while not self._queue:
                if self._closing:
                    return None
                self._ready.wait()
            jobs, rows = self._pop(self.max_batch_size, at_least_one=True)
            if not jobs:  # it held only what is left of a large request that failed
                return []
            # Under concurrent load, wait a little for as many rows as the last batch held.
            target = min(self.max_batch_size, self._last_rows[replica])
            until = jobs[0].enqueued + self.max_wait_s
            while rows < target and not self._closing:
                if not self._queue:
                    remaining = until - time.monotonic()
                    if remaining <= 0:
                        break
                    self._ready.wait(remaining)
                    continue
                more, added = self._pop(self.max_batch_size - rows)
                if not more:  # the next job does not fit: run what we have
                    break
                jobs += more
                rows += added
        self._last_rows[replica] = rows
        return self._live(jobs)

    def _pop(self, room: int, at_least_one: bool = False) -> tuple[list[Job], int]:
        jobs: list[Job] = []
        rows = 0
        queue = self._queue
        while queue and rows < room:
            head = queue[0]
            if type(head) is LargeJob:
                piece = self._slice(head, room - rows)
                if piece is not None:
                    jobs.append(piece)
                    rows += len(piece.rows)
                continue
            if rows + len(head.rows) > room and (jobs or not at_least_one):
                break
            jobs.append(queue.popleft())
            rows += len(head.rows)
        return jobs, rows

    def _slice(self, whole: LargeJob, room: int) -> Slice | None:
        """The next `room` rows (at most) of the large job at the head of the queue. The job leaves
        the queue with its last slice, or when it already failed; else it goes to the back."""
        queue = self._queue
        queue.popleft()
        if whole.future.done():  # failed or past its deadline: what is left of it is dropped
            return None
        start, stop = whole.taken, min(len(whole.rows), whole.taken + room)
        whole.taken = stop
        if stop < len(whole.rows):
            queue.append(whole)
        return Slice(
            whole.rows[start:stop],
            whole.options,
            whole.deadline,
            whole.future,
            whole.loop,
            whole.gone,
            whole.enqueued,
            whole=whole,
            offset=start,
        )

    def _live(self, jobs: list[Job]) -> list[Job]:
        now = time.monotonic()
        live: list[Job] = []
        for job in jobs:
            if job.future.done():  # its waiter already gave up (deadline or cancellation)
                self.stats.expired += 1
            elif job.deadline <= now:
                self.stats.expired += 1
                self._fail(job, _deadline_error())
            elif job.gone is not None and job.gone():
                self.stats.cancelled += 1
                self._fail(job, ClientGone())
            else:
                live.append(job)
        return live

    def _run(self, replica: int, jobs: list[Job]) -> None:
        rows = [row for job in jobs for row in job.rows]
        started = time.monotonic()
        try:
            options = [job.options for job in jobs for _ in job.rows]
            results = list(self._run_batch(replica, rows, options))
            if len(results) != len(rows):
                raise RuntimeError(f"the model returned {len(results)} results for {len(rows)} rows")
        except Exception as exc:
            if len(jobs) == 1:
                self._fail(jobs[0], exc)
                return
            self.stats.split_batches += 1
            for job in jobs:  # find the culprit(s): every other job still gets its answer
                self._run(replica, [job])
            return
        self._record(len(rows), len(jobs))
        answers: list[tuple[Job, list[Any]]] = []
        start = 0
        for job in jobs:
            answers.append((job, results[start : start + len(job.rows)]))
            start += len(job.rows)
        jobs[0].loop.call_soon_threadsafe(_resolve_all, answers)
        self._measure(jobs, len(rows), started, time.monotonic())  # after answering: off their path

    def _record(self, rows: int, jobs: int) -> None:
        with self._ready:
            stats = self.stats
            stats.batches += 1
            stats.rows += rows
            stats.jobs += jobs
            stats.max_rows = max(stats.max_rows, rows)
            stats.multi_job_batches += jobs > 1
            stats.sizes.append(rows)

    def _measure(self, jobs: list[Job], rows: int, started: float, ended: float) -> None:
        with self._ready:
            self.stats.batch_rows.observe(rows)
            self.stats.batch_seconds.observe(ended - started)
            for job in jobs:
                self.stats.queue_seconds.observe(started - job.enqueued)

    def _fail(self, job: Job, exc: BaseException) -> None:
        job.loop.call_soon_threadsafe(_reject, job, exc)


def _deadline_error() -> errors.DeadlineExceeded:
    return errors.DeadlineExceeded("The request passed its deadline before it could run.")


def _expire(future: asyncio.Future[list[Any]]) -> None:
    if not future.done():
        future.set_exception(_deadline_error())


def _resolve_all(answers: list[tuple[Job, list[Any]]]) -> None:
    for job, results in answers:
        job.answer(results)


def _reject(job: Job, exc: BaseException) -> None:
    job.fail(exc)
