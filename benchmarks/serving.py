"""Serving one tabular MLP (64 float features, hidden 256-256, 10 classes) five ways, in one run:

(a) Flask under gunicorn, one model call per request; (b) FastAPI + uvicorn, one call per request;
(c) BentoML with adaptive batching; (d) Ray Serve with `@serve.batch`; (e) OpenMaaS's full path
(API key auth, signature validation, rate limit + metering, dynamic batcher).

Every server is pinned to CPU 0 and the closed-loop load generator to CPU 1; each concurrency
runs 2 s of warm-up and `--seconds` of measurement, single-row requests, `--repeats` times
(medians reported). A do-nothing asyncio server is measured first to show the load generator is
not the bottleneck. Competitors run from their own venvs under `.bench/venvs/` (git-ignored):

    python3.11 -m venv .bench/venvs/flask   && .bench/venvs/flask/bin/pip install flask gunicorn
    python3.11 -m venv .bench/venvs/bentoml && .bench/venvs/bentoml/bin/pip install 'bentoml==1.4.*'
    python3.11 -m venv .bench/venvs/ray     && .bench/venvs/ray/bin/pip install 'ray[serve]'

and reach torch and this package through a `.pth` file naming `.venv`'s site-packages (appended
last, so each venv's own pins win). A missing venv skips that server.

    .venv/bin/python -m benchmarks.serving [--seconds 10] [--repeats 3] [--only openmaas fastapi]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from benchmarks import serving_apps as apps
from benchmarks.loadgen import LoadResult, build_request, run_load, summary
from benchmarks.servers import PYTHON, free_port, pin_to, server_process
from openmaas.tenancy.keys import generate_key

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "serving"
VENVS = ROOT / ".bench" / "venvs"
FEATURES = [f"f{i}" for i in range(64)]
SERVERS = ("nothing", "flask", "fastapi", "bentoml", "ray", "openmaas")


def build_model(folder: Path) -> Path:
    """Train the benchmark MLP for one epoch on synthetic data and write its artifact once."""
    if (folder / "manifest.json").exists():
        return folder
    import numpy as np
    import pandas as pd

    from openmaas.training.artifact import write_artifact
    from openmaas.training.train import train

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 64))
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["label"] = [f"c{i}" for i in (x[:, :10].argmax(axis=1))]
    data = folder.parent / "mlp.csv"
    frame.to_csv(data, index=False)
    trained = train("tabular-classification", data, {"epochs": 1, "hidden_sizes": [256, 256]})
    write_artifact(trained, folder)
    return folder


def _python(venv: str) -> str | None:
    python = VENVS / venv / "bin" / "python"
    return str(python) if python.exists() else None


def _launch(name: str, port: int, model: Path, home: Path) -> tuple[list[str], dict[str, str]] | None:
    """The command and environment that start server `name` on `port`, or None to skip it."""
    base = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MODEL_DIR": str(model), "HOME": str(home)}
    if name == "nothing":
        return [PYTHON, "-c", apps.NOTHING, str(port)], base
    if name == "fastapi":
        return [PYTHON, "-c", apps.FASTAPI, str(port)], base
    if name == "flask":
        python = _python("flask")
        if python is None:
            return None
        (home / "flask_app.py").write_text(apps.FLASK)
        gunicorn = [python, "-m", "gunicorn", "--chdir", str(home), "--bind", f"127.0.0.1:{port}"]
        options = [
            "-w",
            "2",
            "-k",
            "gthread",
            "--threads",
            "8",
            "--no-control-socket",
            "--log-level",
            "warning",
        ]
        return [*gunicorn, *options, "flask_app:app"], base
    if name == "bentoml":
        python = _python("bentoml")
        if python is None:
            return None
        (home / "bento_service.py").write_text(apps.BENTOML)
        env = {**base, "BENTOML_HOME": str(home / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
        serve = [python, "-m", "bentoml", "serve", "bento_service:MLP", "--port", str(port)]
        return [*serve, "--host", "127.0.0.1", "--working-dir", str(home)], env
    if name == "ray":
        python = _python("ray")
        if python is None:
            return None
        env = {**base, "RAY_TMPDIR": str(home / "ray"), "RAY_USAGE_STATS_ENABLED": "0"}
        env["RAY_SERVE_ENABLE_ACCESS_LOG"] = "0"
        return [python, "-c", apps.RAY, str(port), str(home / "ray")], env
    env = {
        **base,
        "OPENMAAS_HOME": str(home / "openmaas"),
        "OPENMAAS_ADMIN_KEY": ADMIN_KEY,
        "OPENMAAS_WORKER_IN_PROCESS": "false",
        # One benchmark client sends thousands of requests a second: lift the default plan limits.
        "OPENMAAS_RATE_LIMIT_REQUESTS_PER_MINUTE": "100000000",
    }
    return [PYTHON, "-m", "openmaas.cli.main", "serve", "--port", str(port)], env


ADMIN_KEY = generate_key()


def _setup_openmaas(url: str, home: Path, model: Path, **deployment: object) -> dict[str, str]:
    """An organisation, its API key, the model registered and deployed (with `deployment`'s extra
    settings, e.g. a placement): the auth header to use."""
    from openmaas import Client
    from openmaas.bootstrap import build_platform
    from openmaas.config import Settings
    from openmaas.ids import new_id
    from openmaas.registry import service as registry
    from openmaas.registry.manifest import read_manifest

    with Client(url, ADMIN_KEY) as admin:
        org = admin.admin.organizations.create("bench")
        key = admin.admin.api_keys(org.id).create("bench").key
    platform = build_platform(Settings(home=home / "openmaas"))
    version_id = new_id("mv_")
    relative = platform.store.model_dir(org.id, version_id)
    shutil.copytree(model, platform.store.path(relative))
    with platform.db.session() as session:
        registry.register_version(
            session,
            version_id=version_id,
            org_id=org.id,
            model_name="mlp",
            artifact_path=relative,
            manifest=read_manifest(model),
            lineage={},
            now=platform.clock.now(),
        )
    platform.db.engine.dispose()
    with Client(url, key) as client:
        client.deployments.create("mlp:1", name="mlp", max_batch_size=64, max_wait_ms=2, **deployment)
        client.deployments.wait_ready("mlp", timeout=120)
    return {"Authorization": f"Bearer {key}"}


def _request(name: str, port: int, headers: dict[str, str]) -> bytes:
    row = {feature: round(0.01 * i, 2) for i, feature in enumerate(FEATURES)}
    body = json.dumps({"inputs": [row]}).encode()
    path = {"openmaas": "/v1/deployments/mlp/predict", "nothing": "/"}.get(name, "/predict")
    all_headers = {"Content-Type": "application/json", **headers}
    return build_request("POST", path, f"127.0.0.1:{port}", all_headers, body)


def _check(name: str, port: int, request: bytes) -> None:
    """One request by hand: the server answers 200 with predictions (fail loudly otherwise)."""

    async def once() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        return head

    deadline = time.monotonic() + 120
    while True:  # Ray listens before its app is deployed: 404/503 until then
        head = asyncio.run(asyncio.wait_for(once(), 60))
        if b" 200 " in head.split(b"\r\n")[0]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} answered {head[:200]!r}")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--only", nargs="+", choices=SERVERS, default=list(SERVERS))
    args = parser.parse_args()
    pin_to(1)
    WORK.mkdir(parents=True, exist_ok=True)
    model = build_model(WORK / "mlp-artifact")
    results: dict[tuple[str, int], list[LoadResult]] = {}
    cpu: dict[tuple[str, int], list[float]] = defaultdict(list)
    for name in args.only:
        home = WORK / "homes" / name
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        port = free_port()
        launch = _launch(name, port, model, home)
        if launch is None:
            print(f"{name:9} skipped: no venv under {VENVS}", flush=True)
            continue
        command, env = launch
        with server_process(command, port, cpu=0, env=env) as process:
            headers = _setup_openmaas(f"http://127.0.0.1:{port}", home, model) if name == "openmaas" else {}
            request = _request(name, port, headers)
            _check(name, port, request)
            for concurrency in args.concurrency:
                for _ in range(args.repeats):
                    cpu_before = _tree_cpu_seconds(process.pid)
                    result = asyncio.run(
                        run_load(
                            "127.0.0.1",
                            port,
                            request,
                            concurrency=concurrency,
                            seconds=args.seconds,
                            warmup=args.warmup,
                        )
                    )
                    results.setdefault((name, concurrency), []).append(result)
                    # CPU the server spent per request (all its processes): unlike req/s, this
                    # does not depend on how busy the shared machine was during the run.
                    served = result.rps * (args.seconds + args.warmup)
                    cpu_ms = (_tree_cpu_seconds(process.pid) - cpu_before) * 1000 / max(served, 1)
                    cpu[(name, concurrency)].append(cpu_ms)
                    print(
                        f"{name:9} c={concurrency:<3} {summary(result)}  cpu/req {cpu_ms:.3f} ms", flush=True
                    )
    report(results, cpu, args.concurrency, args.repeats)


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants so far."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        pass
    return total


def report(
    results: dict[tuple[str, int], list[LoadResult]],
    cpu: dict[tuple[str, int], list[float]],
    concurrencies: list[int],
    repeats: int,
) -> None:
    print(f"\nmedians of {repeats} repeat(s)")
    print(
        f"{'server':10} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'cpu/req ms':>10}"
    )
    med: dict[tuple[str, int], tuple[float, float, float]] = {}
    for (name, concurrency), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rps = statistics.median(r.rps for r in runs)
        p50 = statistics.median(r.percentile(50) for r in runs)
        p99 = statistics.median(r.percentile(99) for r in runs)
        med[(name, concurrency)] = (rps, p50, p99)
        errors = sum(r.errors for r in runs)
        cpu_ms = statistics.median(cpu[(name, concurrency)])
        print(f"{name:10} {concurrency:>4} {rps:9.0f} {p50:8.2f} {p99:8.2f} {errors:>6} {cpu_ms:10.3f}")
    peers = ("flask", "fastapi", "bentoml", "ray")
    for concurrency in concurrencies:
        ours = med.get(("openmaas", concurrency))
        measured = [(med[(p, concurrency)], p) for p in peers if (p, concurrency) in med]
        if not ours or not measured:
            continue
        (best_rps, _, best_p99), best = max(measured)
        fastapi = med.get(("fastapi", concurrency))
        line = (
            f"c={concurrency}: OpenMaaS {ours[0]:.0f} req/s = {ours[0] / best_rps:.2f}x the best peer "
            f"({best}, {best_rps:.0f}); p99 {ours[2]:.2f} vs {best_p99:.2f} ms"
        )
        if fastapi:
            line += f"; p50 - FastAPI p50 = {ours[1] - fastapi[1]:+.2f} ms"
        print(line)


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(ROOT))
    main()
