"""The deployments' load history the console charts: one sample per interval, bounded to the
window, latency read from the interval's share of the replicas' histograms, gone when unloaded."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from openmaas.serving.batcher import BatchStats
from openmaas.serving.directory import ServedModel, ServedModels
from openmaas.serving.metrics_series import BATCH, DeploymentMetrics
from tests.support.clock import FakeClock


@dataclass
class FakeBatcher:
    queued: int = 0
    stats: BatchStats = field(default_factory=BatchStats)


@dataclass
class FakeRuntime:
    batcher: FakeBatcher = field(default_factory=FakeBatcher)
    in_flight: int = 0


def served(name: str, runtime: FakeRuntime, org: str = "org_a") -> ServedModel:
    return ServedModel(name, org, org, 0, deployment_id=f"dep_{name}", version_id="mv_1", runtime=runtime)


def test_samples_hold_queue_depth_and_the_intervals_latency_quantiles() -> None:
    clock, models, runtime = FakeClock(), ServedModels(), FakeRuntime()
    models.register(served("churn", runtime))
    metrics = DeploymentMetrics(models, clock, interval_s=10, window_s=60)

    metrics.sample()  # nothing has run yet
    for _ in range(90):
        runtime.batcher.stats.batch_seconds.observe(0.004)  # bucket (0.0025, 0.005]
    for _ in range(10):
        runtime.batcher.stats.batch_seconds.observe(0.2)  # bucket (0.1, 0.25]
        runtime.batcher.stats.queue_seconds.observe(0.03)  # bucket (0.025, 0.05]
    runtime.batcher.queued, runtime.in_flight = 7, 9
    clock.advance(10)
    metrics.sample()
    clock.advance(10)
    metrics.sample()  # an interval in which nothing finished

    series = metrics.series("org_a", "churn")
    assert series.kind == BATCH
    assert series.at[1] - series.at[0] == 10
    assert series.queued == [0, 7, 7] and series.in_flight == [0, 9, 9]
    assert series.requests == [0, 100, 0]
    assert series.p50_ms[0] is None and series.p50_ms[2] is None
    # p50: rank 50 of 90 in (2.5, 5] ms; p95: rank 95, the 5th of 10 in (100, 250] ms.
    assert series.p50_ms[1] == pytest.approx(2.5 + 2.5 * 50 / 90)
    assert series.p95_ms[1] == pytest.approx(100 + 150 * 5 / 10)
    assert series.wait_p95_ms[1] == pytest.approx(25 + 25 * 9.5 / 10)


def test_the_history_is_bounded_to_the_window_and_another_orgs_name_is_empty() -> None:
    clock, models = FakeClock(), ServedModels()
    models.register(served("churn", FakeRuntime()))
    metrics = DeploymentMetrics(models, clock, interval_s=10, window_s=60)
    for _ in range(20):
        metrics.sample()
        clock.advance(10)
    series = metrics.series("org_a", "churn")
    assert len(series.at) == 6  # an hour of 10 s samples here is a minute of them
    assert series.at[-1] - series.at[0] == 50
    assert metrics.series("org_b", "churn").at == []


def test_a_reloaded_replica_counts_afresh_and_an_unloaded_deployment_is_forgotten() -> None:
    clock, models, first = FakeClock(), ServedModels(), FakeRuntime()
    models.register(served("churn", first))
    metrics = DeploymentMetrics(models, clock, interval_s=10, window_s=3600)
    for _ in range(5):
        first.batcher.stats.batch_seconds.observe(0.004)
    metrics.sample()
    second = FakeRuntime()  # same version reloaded: its histogram starts from zero
    second.batcher.stats.batch_seconds.observe(0.004)
    models.register(served("churn", second))
    metrics.sample()
    assert metrics.series("org_a", "churn").requests == [5, 1]

    models.unregister("org_a", "churn")
    metrics.sample()
    assert metrics.series("org_a", "churn").at == []


@dataclass
class RemoteRuntime:
    """A runtime without a local batcher (as Ray replicas): its waiting requests and in flight."""

    queued: int = 3
    in_flight: int = 5


def test_a_runtime_without_a_batcher_reports_its_queue_and_no_latency() -> None:
    clock, models = FakeClock(), ServedModels()
    models.register(ServedModel("remote", "org_a", "org_a", 0, version_id="mv_1", runtime=RemoteRuntime()))
    metrics = DeploymentMetrics(models, clock, interval_s=10, window_s=60)
    metrics.sample()
    series = metrics.series("org_a", "remote")
    assert series.queued == [3] and series.in_flight == [5] and series.p95_ms == [None]
