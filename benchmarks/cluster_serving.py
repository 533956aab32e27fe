"""The serving half of the cluster benchmark (`benchmarks/cluster.py serving` runs it): the tabular
MLP of `benchmarks/serving.py` served three ways on the same core (every server process, Ray's
included, pinned to CPU 0; the load generator to CPU 1):

(a) `openmaas`: OpenMaaS as today, the replica in the API server's process;
(b) `openmaas-ray`: OpenMaaS with `placement: ray`, one Ray-actor replica (its batcher inside the
    actor) on a one-node Ray cluster, placed and found through its actor handle, predictions sent
    over its direct line (serving/replica_channel.py);
(c) `ray-serve`: Ray Serve with `@serve.batch` behind its own HTTP proxy.

Single-row requests at concurrency 1/16/64, `--warmup` then `--seconds` each, `--repeats` times
(medians). Targets (issue 16): (b) adds at most 1 ms at p50 over (a) at concurrency 1 and keeps
at least 70% of (a)'s throughput at 64; (b) serves at least 5x (c) at 64. Ray Serve needs
`ray[serve]` (`pip install -c requirements.lock 'ray[serve]==2.60.0'`); without it (c) is skipped.

    .venv/bin/python -m benchmarks.cluster_serving [--seconds 5] [--repeats 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator

from benchmarks import serving as single
from benchmarks import serving_apps as apps
from benchmarks.loadgen import LoadResult, run_load, summary
from benchmarks.servers import PYTHON, free_port, pin_to, server_process

WORK = single.ROOT / ".bench" / "cluster"
SERVING = ("openmaas", "openmaas-ray", "ray-serve")

# Starts a one-node Ray cluster with one CPU (pinned with its parent) and prints its address.
RAY_HEAD = """
import sys, time
import ray
ray.init(address="local", num_cpus=1, include_dashboard=False, _temp_dir=sys.argv[1], log_to_driver=False)
print(ray.get_runtime_context().gcs_address, flush=True)
while True:
    time.sleep(3600)
"""


@contextlib.contextmanager
def _ray_head(env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """A Ray head on CPU 0 (the driver holding it, and every Ray process it starts): its address
    and the driver's pid."""
    import subprocess

    temp = tempfile.mkdtemp(prefix="omray-", dir="/tmp")  # Ray's socket paths must stay short
    command = ["taskset", "-c", "0", PYTHON, "-c", RAY_HEAD, temp]
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        address = process.stdout.readline().decode().strip()
        if not address:
            raise RuntimeError("the Ray head did not start")
        yield address, process.pid
    finally:
        process.terminate()  # Ray's driver shuts the local cluster down on SIGTERM
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(temp, ignore_errors=True)


def serving(args: argparse.Namespace) -> None:
    pin_to(1)
    WORK.mkdir(parents=True, exist_ok=True)
    single.WORK.mkdir(parents=True, exist_ok=True)
    model = single.build_model(single.WORK / "mlp-artifact")
    results: dict[tuple[str, int], list[LoadResult]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    for name in args.only:
        home = WORK / "homes" / name
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        port = free_port()
        with contextlib.ExitStack() as stack:
            pids: list[int] = []
            if name == "ray-serve":
                if importlib.util.find_spec("ray.serve") is None:
                    print("ray-serve skipped: ray[serve] is not installed", flush=True)
                    continue
                temp = tempfile.mkdtemp(prefix="omserve-", dir="/tmp")
                stack.callback(shutil.rmtree, temp, ignore_errors=True)
                env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MODEL_DIR": str(model)}
                env |= {"RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_ENABLE_ACCESS_LOG": "0", "HOME": str(home)}
                command = [PYTHON, "-c", apps.RAY, str(port), temp]
                # Ray Serve takes over a minute to listen on this shared 2-core machine.
                process = stack.enter_context(server_process(command, port, cpu=0, env=env, wait_s=300))
                headers: dict[str, str] = {}
            else:
                launch = single._launch("openmaas", port, model, home)
                assert launch is not None
                command, env = launch
                options: dict[str, object] = {}
                if name == "openmaas-ray":
                    # The same HOME: the API server joins with the token Ray generated there
                    # (a process joining a cluster uses token authentication only when told).
                    env = {**env, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
                    address, head = stack.enter_context(_ray_head(env))
                    pids.append(head)
                    env = {**env, "OPENMAAS_RAY_ADDRESS": address}
                    options = {"placement": "ray", "cpus": 1}
                process = stack.enter_context(server_process(command, port, cpu=0, env=env))
                headers = single._setup_openmaas(f"http://127.0.0.1:{port}", home, model, **options)
            pids.append(process.pid)
            request = single._request("openmaas" if name.startswith("openmaas") else "ray", port, headers)
            single._check(name, port, request)
            for concurrency in args.concurrency:
                for _ in range(args.repeats):
                    before = sum(single._tree_cpu_seconds(pid) for pid in pids)
                    timing = {"seconds": args.seconds, "warmup": args.warmup, "concurrency": concurrency}
                    result = asyncio.run(run_load("127.0.0.1", port, request, **timing))
                    results.setdefault((name, concurrency), []).append(result)
                    served = result.rps * (args.seconds + args.warmup)
                    spent = sum(single._tree_cpu_seconds(pid) for pid in pids) - before
                    cpu.setdefault((name, concurrency), []).append(spent * 1000 / max(served, 1))
                    print(f"{name:12} c={concurrency:<3} {summary(result)}", flush=True)
    single.report(results, {key: values for key, values in cpu.items()}, args.concurrency, args.repeats)
    _targets(results)


def _targets(results: dict[tuple[str, int], list[LoadResult]]) -> None:
    """Issue 16's serving targets, met or not."""

    def median(name: str, concurrency: int, what: str) -> float | None:
        runs = results.get((name, concurrency))
        if not runs:
            return None
        return statistics.median(r.rps if what == "rps" else r.percentile(50) for r in runs)

    local_p50, ray_p50 = median("openmaas", 1, "p50"), median("openmaas-ray", 1, "p50")
    if local_p50 is not None and ray_p50 is not None:
        added = ray_p50 - local_p50
        print(f"c=1: Ray replica adds {added:+.2f} ms at p50 (target <= 1 ms): {_met(added <= 1)}")
    local, on_ray, serve = (median(n, 64, "rps") for n in SERVING)
    if local and on_ray:
        share = on_ray / local
        print(f"c=64: Ray replica keeps {share:.0%} of in-process req/s (>= 70%): {_met(share >= 0.7)}")
    if on_ray and serve:
        times = on_ray / serve
        print(f"c=64: Ray replica serves {times:.1f}x Ray Serve (target >= 5x): {_met(times >= 5)}")


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--only", nargs="+", choices=SERVING, default=list(SERVING))
    serving(parser.parse_args(argv))


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(single.ROOT))
    main()
