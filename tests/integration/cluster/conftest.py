"""A two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head and one worker node,
each with its own processes and resources), shared by the tests of a module; skipped when Ray (the
`cluster` extra) is not installed.

xdist-safe: the GCS listens on a free port Ray picks, the session folder is a fresh temporary one,
and no dashboard starts."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

# Nodes whose raylet stops answering are declared dead after ~2 s, not the default ~30 s.
FAST_FAILURE_DETECTION = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'openmaas[cluster]'")
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("this process is already connected to another Ray cluster")
    # A short path: Ray's socket names must fit in 107 bytes.
    session = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": False,
            "temp_dir": session,
            "_system_config": FAST_FAILURE_DETECTION,
        },
    )
    cluster.add_node(num_cpus=2)
    ray.init(
        address=cluster.address, namespace="openmaas-tests", configure_logging=False, log_to_driver=False
    )
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(session, ignore_errors=True)
