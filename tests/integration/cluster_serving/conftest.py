"""A local Ray instance for the cluster-serving tests: one per test module (and xdist process),
two CPUs, no dashboard, its own session and ports; skipped where Ray is not installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """The address of a fresh local Ray instance this process has joined."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (the `cluster` extra)")
    if ray.is_initialized():  # another module's instance in this process: share it, leave it up
        yield ray.get_runtime_context().gcs_address
        return
    # `local`: always a new instance, never one another test process or a developer started.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
