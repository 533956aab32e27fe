"""What authentication, routing, metrics and error handling cost per request.

The same closed-loop load against OpenMaaS's authenticated `GET /v1/models` and against a bare
FastAPI endpoint that does nothing, both on the same uvicorn (uvloop + httptools, access log off),
each server pinned to CPU 0 and the load generator to CPU 1. At concurrency 1 the p50 difference is
the per-request overhead; at 64 the throughput ratio shows what that overhead costs under load.

    .venv/bin/python -m benchmarks.gateway_overhead [--seconds 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from benchmarks.loadgen import LoadResult, build_request, run_load, summary
from benchmarks.servers import PYTHON, free_port, pin_to, server_process

BARE_APP = """
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.get("/v1/models")
async def models():
    return {"object": "list", "data": []}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")
"""

NOTHING_SERVER = """
import asyncio, sys
RESPONSE = b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\ncontent-type: application/json\\r\\n\\r\\n{}"
async def handle(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\\r\\n\\r\\n")
            writer.write(RESPONSE)
    except Exception:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def _measure(port: int, headers: dict[str, str], concurrency: int, seconds: float) -> LoadResult:
    request = build_request("GET", "/v1/models", f"127.0.0.1:{port}", headers)
    return asyncio.run(run_load("127.0.0.1", port, request, concurrency=concurrency, seconds=seconds))


def _openmaas_key(url: str, admin_key: str) -> str:
    from openmaas import Client

    with Client(url, admin_key) as admin:
        admin.admin.organizations.create("bench")
        return admin.admin.api_keys("bench").create("bench").key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    pin_to(1)
    from openmaas.tenancy.keys import generate_key

    admin_key = generate_key()
    results: dict[tuple[str, int], list[LoadResult]] = {}
    with tempfile.TemporaryDirectory() as home:
        ports = {name: free_port() for name in ("nothing", "bare", "openmaas")}
        env = {"OPENMAAS_HOME": str(Path(home) / "om"), "OPENMAAS_ADMIN_KEY": admin_key}
        commands = {
            "nothing": [PYTHON, "-c", NOTHING_SERVER, str(ports["nothing"])],
            "bare": [PYTHON, "-c", BARE_APP, str(ports["bare"])],
            "openmaas": [PYTHON, "-m", "openmaas.cli.main", "serve", "--port", str(ports["openmaas"])],
        }
        for name, command in commands.items():
            with server_process(command, ports[name], cpu=0, env=env):
                headers = {}
                if name == "openmaas":
                    key = _openmaas_key(f"http://127.0.0.1:{ports[name]}", admin_key)
                    headers = {"Authorization": f"Bearer {key}"}
                for concurrency in args.concurrency:
                    for _ in range(args.repeats):
                        result = _measure(ports[name], headers, concurrency, args.seconds)
                        results.setdefault((name, concurrency), []).append(result)
                        print(f"{name:9} c={concurrency:<3} {summary(result)}", flush=True)
    _report(results, args.concurrency)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _report(results: dict[tuple[str, int], list[LoadResult]], concurrencies: list[int]) -> None:
    print("\nmedians of repeats")
    print(f"{'server':10} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for (name, concurrency), runs in results.items():
        rps = _median([r.rps for r in runs])
        p50 = _median([r.percentile(50) for r in runs])
        p99 = _median([r.percentile(99) for r in runs])
        print(f"{name:10} {concurrency:>4} {rps:9.0f} {p50:8.2f} {p99:8.2f}")
    for concurrency in concurrencies:
        bare = results.get(("bare", concurrency))
        ours = results.get(("openmaas", concurrency))
        if bare and ours:
            delta = _median([r.percentile(50) for r in ours]) - _median([r.percentile(50) for r in bare])
            ratio = _median([r.rps for r in ours]) / _median([r.rps for r in bare])
            print(f"c={concurrency}: OpenMaaS p50 - bare p50 = {delta:+.3f} ms; throughput ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
