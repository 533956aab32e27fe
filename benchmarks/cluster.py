"""Cluster mode on Ray, measured on this machine.

Training (`training`): a two-node Ray cluster (`ray.cluster_utils.Cluster`, a head and a worker
node), an API server and a worker in this process, the breast-cancer table uploaded once. It gives
- the per-epoch time of a `workers: 2` job (Ray Train, DDP over gloo, one rank per node) against
  the same job on one local worker (the local executor's job process), both from the jobs' own
  per-epoch `seconds` metric (median), and each job's wall time from created to finished;
- the time from a node's death to the job running again: a `workers: 2` job has the node of one of
  its ranks removed after its first checkpoints; timed from the removal to the first epoch metric
  of the restarted workers (and to the restart event itself).

Serving (`serving`): the Ray-actor replicas against in-process serving and Ray Serve; filled in by
the serving half of issue 16.

Usage: python benchmarks/cluster.py training [--epochs 30]
       python benchmarks/cluster.py serving [its options]
Quote `uptime`'s load average with the figures: two shared cores make both sides noisy.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.data.builders and the test harness


def _events(api: Any, job_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        query = {"limit": 1000, **({"after": after} if after is not None else {})}
        page = api.get(f"/v1/training_jobs/{job_id}/events", params=query).json()
        data += page["data"]
        if not page.get("has_more"):
            return data
        after = data[-1]["id"]


def _at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _job_figures(api: Any, job_id: str) -> dict[str, float]:
    from tests.integration.jobs.harness import job_in

    done = job_in(api, f"/v1/training_jobs/{job_id}", {"succeeded", "failed", "cancelled"}, timeout=900)
    assert done["status"] == "succeeded", done
    seconds = [e["data"]["seconds"] for e in _events(api, job_id) if e["type"] == "metrics"]
    version = api.get(f"/v1/registry/versions/{done['result']['ref']}").json()
    return {
        "epoch_s_median": statistics.median(seconds),
        "wall_s": _at(done["finished_at"]) - _at(done["created_at"]),
        "accuracy": version["metrics"]["accuracy"],
    }


def training(epochs: int) -> None:
    import ray
    from ray.cluster_utils import Cluster
    from tests.data.builders import breast_cancer_csv
    from tests.integration.jobs.harness import fast_server, job_in, upload, wait_for

    from openmaas.job_process import job_executor, local_executor
    from openmaas.jobs.worker import Worker, start_in_thread

    session = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    work = Path(tempfile.mkdtemp(prefix="omcluster-"))
    started = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": False,
            "temp_dir": session,
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4},
        },
    )
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    print(f"two-node cluster up in {time.perf_counter() - started:.1f}s")
    home = work / "home"
    database = f"sqlite:///{home / 'openmaas.db'}"
    try:
        with fast_server(home, database, executor="ray", ray_job_cpus=0.0) as served:
            platform = served.platform
            tenant = served.tenant("bench")
            executors = {
                "ray": job_executor(platform.settings, platform.store),
                "local": local_executor(platform.store),
            }
            with served.client(tenant.key) as api:
                csv = breast_cancer_csv(work / "cancer.csv")
                dataset = upload(api, csv, "cancer").json()
                thread, stop = start_in_thread(
                    Worker(platform.db, platform.clock, platform.settings, executor=executors["local"])
                )
                job_in(api, f"/v1/jobs/{dataset['validation_job_id']}", {"succeeded"}, timeout=300)
                base = {"task": "tabular-classification", "dataset": "cancer", "target": "label"}
                params = {"epochs": epochs, "hidden_sizes": [32]}
                local_id = api.post("/v1/training_jobs", json={**base, "params": params}).json()["id"]
                local = _job_figures(api, local_id)
                stop.set()
                thread.join(timeout=60)

                thread, stop = start_in_thread(
                    Worker(platform.db, platform.clock, platform.settings, executor=executors["ray"])
                )
                two_workers = {**base, "params": params, "workers": 2}
                ray_id = api.post("/v1/training_jobs", json=two_workers).json()["id"]
                two = _job_figures(api, ray_id)
                print(f"epochs {epochs}, batch 64 (global), breast cancer (569 rows)")
                print(f"{'':24}{'epoch s (median)':>18}{'job wall s':>12}{'accuracy':>10}")
                for name, figures in (("1 local worker", local), ("workers: 2 (Ray Train)", two)):
                    print(
                        f"{name:24}{figures['epoch_s_median']:>18.4f}{figures['wall_s']:>12.1f}"
                        f"{figures['accuracy']:>10.3f}"
                    )

                long = {"epochs": 400, "hidden_sizes": [32], "checkpoint_overhead": 0}
                job_id = api.post("/v1/training_jobs", json={**two_workers, "params": long}).json()["id"]

                def placed() -> list[dict[str, Any]] | None:
                    events = _events(api, job_id)
                    ok = any(e["type"] == "checkpoint" and e["data"]["epoch"] >= 2 for e in events)
                    return events if ok else None

                events = wait_for(placed, timeout=600, every=0.2)
                ranks = next(e["data"]["workers"] for e in events if (e.get("data") or {}).get("group_start"))
                doomed = next(n for n in cluster.worker_nodes if n.node_id in {r["node_id"] for r in ranks})
                killed_at = time.time()
                cluster.remove_node(doomed, allow_graceful=False)
                job_in(api, f"/v1/training_jobs/{job_id}", {"succeeded"}, timeout=900)
                events = _events(api, job_id)
                restart = next(e for e in events if "restarted the workers" in e["message"])
                restarted_at = _at(restart["created_at"])
                metrics = [e for e in events if e["type"] == "metrics"]
                resumed = next(e for e in metrics if _at(e["created_at"]) > restarted_at)
                print(
                    f"node removed → workers restarted: {_at(restart['created_at']) - killed_at:.1f}s; "
                    f"→ first epoch after the restart: {_at(resumed['created_at']) - killed_at:.1f}s"
                )
                stop.set()
                thread.join(timeout=60)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(session, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def serving(argv: list[str]) -> None:
    """The serving half of issue 16 (Ray-actor replicas): `benchmarks/cluster_serving.py`."""
    from benchmarks.cluster_serving import main as serving_main  # type: ignore[import-not-found,unused-ignore]

    serving_main(argv)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=["training", "serving"])
    parser.add_argument("--epochs", type=int, default=30)
    if sys.argv[1:2] == ["serving"]:
        serving(sys.argv[2:])
        return
    args = parser.parse_args()
    training(args.epochs)


if __name__ == "__main__":
    main()
