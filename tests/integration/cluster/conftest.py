"""A two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head and one worker node,
each with its own processes and resources), shared by the tests of a module; skipped when Ray (the
`cluster` extra) is not installed.

xdist-safe: the GCS listens on a free port Ray picks, the session folder is a fresh temporary one,
and no dashboard starts. OPENMAAS_TEST_RAY_KEEP_LOGS=1 keeps the session folder (Ray's logs) and
prints its path."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

# Nodes whose raylet stops answering are declared dead after ~2 s, not the default ~30 s.
SYSTEM_CONFIG = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}
# Ray Train's controller looks at its workers every 0.5 s, not 2 s (it notices a lost rank
# sooner), waits 3 s, not 60 s, for its workers' placement group (placed in well under a second
# here when there is room), and starts no preemption watcher (one more Python process per worker
# group, for node drains, which these tests do not make). Read from the environment of the process
# that calls `fit` (a job attempt's actor: Ray's processes inherit it from the raylets started here).
# No memory monitor in the raylets: it kills Ray's workers once the machine's memory is 95% used,
# by whatever process (measured: another test's 14 GB on this shared 24 GB machine got a job's
# workers killed three attempts in a row); the kernel's OOM killer still guards the machine.
RAY_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "3",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_memory_monitor_refresh_ms": "0",
}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'openmaas[cluster]'")
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("this process is already connected to another Ray cluster")
    # A short path: Ray's socket names must fit in 107 bytes.
    session = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    with pytest.MonkeyPatch.context() as environment:
        for name, value in RAY_ENV.items():
            environment.setenv(name, value)
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 2,
                "include_dashboard": False,
                "temp_dir": session,
                "_system_config": SYSTEM_CONFIG,
            },
        )
        try:
            cluster.add_node(num_cpus=2)
            ray.init(
                address=cluster.address,
                namespace="openmaas-tests",
                configure_logging=False,
                log_to_driver=False,
            )
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()
            if os.environ.get("OPENMAAS_TEST_RAY_KEEP_LOGS") == "1":
                print(f"Ray's logs: {session}")
            else:
                shutil.rmtree(session, ignore_errors=True)
