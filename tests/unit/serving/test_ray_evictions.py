"""Room for replicas on Ray, per node: from what each node has unreserved and what this server's
idle deployments hold there, which to unload (least recently used first, only as many as needed)
so that every new replica has a node, or None when nothing would make room."""

from __future__ import annotations

from openmaas.serving.memory import RayResident, Reserve, choose_ray_evictions

MB = 1 << 20


def _mb(memory: int, cpus: float = 0.0, gpus: float = 0.0) -> Reserve:
    return Reserve(cpus, gpus, memory * MB)


def _on(name: str, used: float, busy: bool = False, **holds: Reserve) -> RayResident:
    return RayResident(name, holds, used, busy)


def test_nothing_is_evicted_when_a_node_has_room_now() -> None:
    free = {"a": _mb(100, cpus=1), "b": _mb(10, cpus=1)}
    assert choose_ray_evictions(free, [_on("idle", 1.0, a=_mb(50))], [_mb(60, cpus=1)]) == []


def test_room_is_per_node_not_the_clusters_sum() -> None:
    # 60 MB free in all, but no node has 50 MB: the idle deployment on `a` goes.
    free = {"a": _mb(30), "b": _mb(30)}
    assert choose_ray_evictions(free, [_on("idle", 1.0, a=_mb(40))], [_mb(50)]) == ["idle"]


def test_the_least_recently_used_idle_ones_go_first_and_only_as_many_as_needed() -> None:
    free = {"a": _mb(10)}
    residents = [_on("new", 9.0, a=_mb(40)), _on("old", 1.0, a=_mb(40)), _on("mid", 5.0, a=_mb(40))]
    assert choose_ray_evictions(free, residents, [_mb(50)]) == ["old"]
    assert choose_ray_evictions(free, residents, [_mb(90)]) == ["old", "mid"]


def test_one_taken_first_whose_node_does_not_help_is_kept() -> None:
    # The oldest holds memory on `a`, but the replica needs a GPU only `b` has.
    free = {"a": _mb(0), "b": _mb(0, gpus=1)}
    residents = [_on("oldest-on-a", 1.0, a=_mb(50)), _on("on-b", 5.0, b=_mb(50, cpus=1))]
    assert choose_ray_evictions(free, residents, [_mb(40, cpus=1, gpus=1)]) == ["on-b"]


def test_busy_deployments_are_never_evicted() -> None:
    free = {"a": _mb(0)}
    residents = [_on("busy-old", 1.0, busy=True, a=_mb(50)), _on("idle", 5.0, a=_mb(30))]
    assert choose_ray_evictions(free, residents, [_mb(30)]) == ["idle"]
    assert choose_ray_evictions(free, residents, [_mb(40)]) is None


def test_cpus_and_gpus_count_as_memory_does() -> None:
    free = {"a": _mb(100, cpus=0.5)}
    residents = [_on("idle", 1.0, a=_mb(1, cpus=1.5))]
    assert choose_ray_evictions(free, [], [_mb(1, cpus=1)]) is None
    assert choose_ray_evictions(free, residents, [_mb(1, cpus=1)]) == ["idle"]
    assert choose_ray_evictions(free, residents, [_mb(1, cpus=1, gpus=1)]) is None  # no node has a GPU


def test_every_replica_needs_a_node_of_its_own_room() -> None:
    # Two replicas of 40 MB: `a` fits one and `b` one; three do not fit without an eviction.
    free = {"a": _mb(50), "b": _mb(45)}
    assert choose_ray_evictions(free, [], [_mb(40)] * 2) == []
    residents = [_on("idle", 1.0, b=_mb(40))]
    assert choose_ray_evictions(free, residents, [_mb(40)] * 3) == ["idle"]
    assert choose_ray_evictions(free, residents, [_mb(40)] * 4) is None


def test_what_a_node_that_left_held_comes_back_nowhere() -> None:
    free = {"a": _mb(10)}
    assert choose_ray_evictions(free, [_on("idle", 1.0, gone=_mb(100))], [_mb(50)]) is None


def test_fractional_cpus_add_up_to_a_whole_one() -> None:
    free = {"a": Reserve(cpus=0.1 + 0.2, memory_bytes=0)}
    assert choose_ray_evictions(free, [], [Reserve(cpus=0.3)]) == []
