"""The pure rules behind deployments: which idle deployments the memory budget unloads, how a
traffic split routes a draw, and what the request schemas accept."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from openmaas.schemas.serving import DeploymentCreate, DeploymentUpdate
from openmaas.serving.directory import ServedModel
from openmaas.serving.memory import Resident, artifact_bytes, choose_evictions


def _r(name: str, size: int, used: float, busy: bool = False) -> Resident:
    return Resident(name, size, used, busy)


def test_nothing_is_evicted_when_the_load_fits() -> None:
    assert choose_evictions([_r("a", 40, 1.0)], need=60, budget=100) == []


def test_the_least_recently_used_idle_ones_go_first_and_only_as_many_as_needed() -> None:
    residents = [_r("new", 30, 9.0), _r("old", 30, 1.0), _r("mid", 30, 5.0)]
    assert choose_evictions(residents, need=30, budget=100) == ["old"]
    assert choose_evictions(residents, need=60, budget=100) == ["old", "mid"]


def test_busy_deployments_are_never_evicted() -> None:
    residents = [_r("busy-old", 50, 1.0, busy=True), _r("idle", 30, 5.0)]
    assert choose_evictions(residents, need=40, budget=100) == ["idle"]
    assert choose_evictions(residents, need=60, budget=100) is None


def test_a_load_larger_than_the_whole_budget_evicts_nothing() -> None:
    assert choose_evictions([_r("a", 10, 1.0)], need=101, budget=100) is None


def test_artifact_bytes_counts_every_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 5)
    assert artifact_bytes(tmp_path) == 15
    assert artifact_bytes(tmp_path / "missing") == 0 and artifact_bytes(None) == 0


def _split(weights: list[int]) -> ServedModel:
    routes = tuple(ServedModel(f"m{i}", "org", "org", 0, version_id=f"v{i}") for i in range(len(weights)))
    cumulative = tuple(sum(weights[: i + 1]) for i in range(len(weights)))
    return ServedModel("m", "org", "org", 0, routes=routes, cumulative=cumulative)


def test_a_draw_picks_the_route_whose_band_holds_it() -> None:
    split = _split([90, 10])
    assert split.pick(0.0).version_id == "v0"
    assert split.pick(89.999).version_id == "v0"
    assert split.pick(90.0).version_id == "v1"
    assert split.pick(99.999).version_id == "v1"
    plain = ServedModel("m", "org", "org", 0, version_id="only")
    assert plain.pick(50.0) is plain


def test_seeded_draws_split_requests_by_weight() -> None:
    split = _split([70, 20, 10])
    rng = random.Random(3)
    counts = {"v0": 0, "v1": 0, "v2": 0}
    for _ in range(3000):
        counts[split.pick(rng.random() * 100).version_id] += 1
    # Seeded: these counts never change from run to run; they sit close to the weights.
    assert abs(counts["v0"] - 2100) < 120 and abs(counts["v1"] - 600) < 90 and abs(counts["v2"] - 300) < 70


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"traffic": []}, "traffic"),
        ({"traffic": [{"version": "m:1", "weight": 101}]}, "weight"),
        ({"traffic": [{"version": "m:1", "weight": 0}]}, "weight"),
        ({"traffic": [{"version": "m:1"}]}, "weight"),
        ({"traffic": [{"version": "m:1", "weight": 100, "extra": 1}]}, "extra"),
        ({"traffic": [{"version": f"m:{i}", "weight": 20} for i in range(5)]}, "traffic"),
        ({"min_replicas": 2}, "min_replicas"),
        ({"idle_timeout_s": 0}, "idle_timeout_s"),
    ],
)
def test_update_bodies_are_validated(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        DeploymentUpdate.model_validate(body)
    assert field in str(error.value.errors()[0]["loc"])


def test_create_defaults_keep_one_replica_loaded() -> None:
    body = DeploymentCreate.model_validate({"model": "m"})
    assert body.min_replicas == 1 and body.idle_timeout_s is None
