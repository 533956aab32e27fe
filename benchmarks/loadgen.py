"""A closed-loop HTTP/1.1 keep-alive load generator on raw asyncio streams, for benchmarks.

Each of `concurrency` connections sends one request, waits for the whole response, and sends the
next: requests/s and latency percentiles come from what the clients saw. It is light enough that
one core drives well over 10,000 requests/s, so it is not the bottleneck of the servers it tests
(`--check` measures that against a do-nothing server).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def build_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value)
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _client(
    host: str,
    port: int,
    request: bytes,
    stop_at: float,
    record_from: float,
    out: list[float],
    errors: list[int],
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    try:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                break
            writer.write(request)
            status = await _read_response(reader)
            finished = time.perf_counter()
            if started >= record_from:
                out.append((finished - started) * 1000)
                done += 1
                if status >= 400:
                    errors.append(status)
    finally:
        writer.close()
    return done


async def run_load(
    host: str, port: int, request: bytes, *, concurrency: int, seconds: float, warmup: float = 2.0
) -> LoadResult:
    """Run `concurrency` closed-loop clients for `warmup + seconds`; measure the last `seconds`."""
    start = time.perf_counter()
    record_from = start + warmup
    stop_at = record_from + seconds
    latencies: list[float] = []
    errors: list[int] = []
    counts = await asyncio.gather(
        *(_client(host, port, request, stop_at, record_from, latencies, errors) for _ in range(concurrency))
    )
    return LoadResult(sum(counts), len(errors), seconds, latencies)


def summary(result: LoadResult) -> str:
    return (
        f"{result.rps:9.0f} req/s  p50 {result.percentile(50):7.2f} ms  p99 {result.percentile(99):7.2f} ms"
        f"  errors {result.errors}  (mean {statistics.fmean(result.latencies_ms or [0]):.2f} ms)"
    )
