"""A deployment's typed settings: stored rows of every shape load, and what is stored back keeps
the shape (only the keys that were given, engine settings at the top level, a split only when
there is one)."""

from __future__ import annotations

from typing import Any

import pytest

from openmaas.serving.deployment_config import (
    DEFAULT_IDLE_TIMEOUT_S,
    DeploymentConfig,
    TrafficRoute,
    engine_setting_error,
)

AS_CREATED = {
    "max_batch_size": 8,
    "max_wait_ms": 2.0,
    "max_queue": 64,
    "min_replicas": 1,
    "idle_timeout_s": 300.0,
    "max_model_len": 256,
    "enable_prefix_caching": True,
}
SPLIT = [
    {"version": "churn:1", "version_id": "mv_1", "weight": 90},
    {"version": "churn:2", "version_id": "mv_2", "weight": 10},
]


def test_a_stored_row_parses_and_stores_back_unchanged() -> None:
    config = DeploymentConfig.from_stored(AS_CREATED)
    assert config.max_batch_size == 8 and config.engine.max_model_len == 256
    assert config.engine.options() == {"max_model_len": 256, "enable_prefix_caching": True}
    assert config.to_stored() == AS_CREATED
    assert list(config.to_stored()) == list(AS_CREATED)  # the same key order as well
    split = {**AS_CREATED, "traffic": SPLIT}
    assert DeploymentConfig.from_stored(split).to_stored() == split


def test_an_older_row_gets_the_defaults_and_keeps_its_own_keys() -> None:
    config = DeploymentConfig.from_stored({"max_batch_size": 4, "idle_timeout_s": None})
    assert (config.max_wait_ms, config.max_queue, config.min_replicas) == (5.0, 1024, 1)
    assert config.idle_timeout_s == DEFAULT_IDLE_TIMEOUT_S
    assert set(config.to_stored()) == {"max_batch_size", "idle_timeout_s"}
    assert config.routes("mv_9") == (TrafficRoute(version_id="mv_9", weight=100),)


def test_an_update_keeps_the_split_unless_given_one() -> None:
    config = DeploymentConfig.from_stored({**AS_CREATED, "traffic": SPLIT})
    kept = config.updated({"max_queue": 8})
    assert kept.max_queue == 8 and [r.version for r in kept.traffic] == ["churn:1", "churn:2"]
    assert "traffic" not in config.updated({}, ()).to_stored()
    one = (TrafficRoute(version="churn:2", version_id="mv_2", weight=100),)
    assert "traffic" not in config.updated({}, one).to_stored()  # one version: no split


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("max_num_seqs", 4, True),
        ("max_num_seqs", True, False),
        ("max_num_seqs", "4", False),
        ("enable_prefix_caching", False, True),
        ("enable_prefix_caching", 0, False),
        ("dtype", "float32", True),
        ("dtype", 32, False),
        ("quantization", "int8", True),
        ("quantization", "int4", True),
        ("quantization", "q4_0", False),
        ("quantization", 8, False),
        ("quantization_group_size", 64, True),
        ("quantization_group_size", 0, True),
        ("quantization_group_size", 48, False),
        ("quantization_group_size", -32, False),
    ],
)
def test_engine_settings_are_typed_strictly(name: str, value: Any, ok: bool) -> None:
    assert (engine_setting_error(name, value) is None) is ok
