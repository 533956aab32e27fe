"""Hyperparameters are validated per family, with errors naming the parameter."""

from __future__ import annotations

from typing import Any

import pytest

from openmaas.errors import ValidationFailed
from openmaas.training.config import (
    RecommendationConfig,
    TabularClassificationConfig,
    TextClassificationConfig,
    config_from_params,
    hyperparameters,
)


@pytest.mark.parametrize(
    ("task", "params", "param"),
    [
        ("tabular-classification", {"epochs": 0}, "epochs"),
        ("tabular-classification", {"epochs": 2.5}, "epochs"),
        ("tabular-regression", {"learning_rate": -1}, "learning_rate"),
        ("tabular-regression", {"hidden_sizes": [64, 0]}, "hidden_sizes"),
        ("image-classification", {"dropout": 1.0}, "dropout"),
        ("image-classification", {"channels": []}, "channels"),
        ("audio-classification", {"batch_size": "many"}, "batch_size"),
        ("text-classification", {"architecture": "gru"}, "architecture"),
        (
            "text-classification",
            {"architecture": "transformer", "embedding_dim": 30, "num_heads": 4},
            "num_heads",
        ),
        ("recommendation", {"feedback": "explicit"}, "rating_column"),
        ("recommendation", {"k": 0}, "k"),
        ("recommendation", {"colour": "red"}, "params.colour"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(task: str, params: dict[str, Any], param: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        config_from_params(task, params)
    assert info.value.param == param
    assert info.value.status == 422


def test_unknown_task_names_task() -> None:
    with pytest.raises(ValidationFailed) as info:
        config_from_params("llm-pretraining", {})
    assert info.value.param == "task"


def test_cli_strings_are_parsed_into_typed_values() -> None:
    config = config_from_params(
        "text-classification", {"epochs": "3", "learning_rate": "0.01", "architecture": "lstm"}
    )
    assert isinstance(config, TextClassificationConfig)
    assert (config.epochs, config.learning_rate) == (3, 0.01)


def test_defaults_per_family() -> None:
    assert isinstance(config_from_params("tabular-classification"), TabularClassificationConfig)
    rec = config_from_params("recommendation", {"feedback": "explicit", "rating_column": "stars"})
    assert isinstance(rec, RecommendationConfig) and rec.rating_column == "stars" and rec.k == 10


def test_hyperparameters_list_names_types_and_defaults() -> None:
    listed = {entry["name"]: entry for entry in hyperparameters("text-classification")}
    assert listed["epochs"] == {"name": "epochs", "type": "int", "default": 20}
    assert listed["architecture"]["default"] == "lstm" and "transformer" in listed["architecture"]["type"]
    assert {entry["name"] for entry in hyperparameters("recommendation")} >= {"factors", "k", "feedback"}


def test_an_unknown_parameter_lists_the_task_parameters_and_suggests_the_closest() -> None:
    with pytest.raises(ValidationFailed) as info:
        config_from_params("tabular-classification", {"epochs": 3, "epoch": 5})
    error = info.value
    assert (error.status, error.param, error.code) == (422, "params.epoch", "unknown_parameter")
    assert "did you mean 'epochs'?" in error.message
    names = [entry["name"] for entry in hyperparameters("tabular-classification")]
    assert all(name in error.message for name in names)  # every parameter the task takes


def test_an_unknown_parameter_far_from_any_suggests_none() -> None:
    with pytest.raises(ValidationFailed) as info:
        config_from_params("recommendation", {"colour": "red"})
    assert "did you mean" not in info.value.message and "factors" in info.value.message
