"""Tabular families on scikit-learn's bundled sets, end to end through the artifact."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from openmaas.datasets import validate_dataset
from openmaas.training.artifact import load_artifact, write_artifact
from openmaas.training.predictor import ClassPrediction, ValuePrediction
from openmaas.training.train import train
from tests.data.builders import breast_cancer_csv, diabetes_csv

BREAST_CANCER = {"epochs": 30, "learning_rate": 0.003}


def test_breast_cancer_reaches_95_percent_and_serves_from_the_artifact(tmp_path: Path) -> None:
    path = breast_cancer_csv(tmp_path / "bc.csv")
    report = validate_dataset(path, target="label")
    assert report.ok and report.rows == 569 and report.schema.classes == {"benign": 357, "malignant": 212}
    trained = train("tabular-classification", path, BREAST_CANCER)
    assert trained.metrics["accuracy"] >= 0.95
    assert trained.metrics["roc_auc"] >= 0.97
    assert len(trained.history) == 30 and all("val_accuracy" in r for r in trained.history)
    write_artifact(trained, tmp_path / "model")
    rows = pd.read_csv(path).drop(columns=["label"]).head(20).to_dict("records")
    predictions = load_artifact(tmp_path / "model").predict(rows)
    truth = pd.read_csv(path)["label"].head(20).tolist()
    assert all(isinstance(p, ClassPrediction) for p in predictions)
    assert sum(p.label == t for p, t in zip(predictions, truth, strict=True)) >= 18  # type: ignore[union-attr]


def test_same_seed_same_metrics_other_seed_other_split(tmp_path: Path) -> None:
    path = breast_cancer_csv(tmp_path / "bc.csv")
    params = {"epochs": 3}
    first, second = (
        train("tabular-classification", path, params),
        train("tabular-classification", path, params),
    )
    assert first.metrics == second.metrics
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in first.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in second.history]
    other = train("tabular-classification", path, params, {"split": {"seed": 5}})
    assert [r["val_loss"] for r in other.history] != [r["val_loss"] for r in first.history]


def test_diabetes_regression_r2_at_least_0_4(tmp_path: Path) -> None:
    path = diabetes_csv(tmp_path / "diabetes.csv")
    trained = train("tabular-regression", path, {"epochs": 60, "target": "target"})
    assert trained.metrics["r2"] >= 0.4
    assert set(trained.metrics) == {"mse", "mae", "r2"}
    write_artifact(trained, tmp_path / "model")
    row = pd.read_csv(path).drop(columns=["target"]).head(1).to_dict("records")
    (prediction,) = load_artifact(tmp_path / "model").predict(row)
    assert isinstance(prediction, ValuePrediction) and 25 <= prediction.value <= 350


def test_training_rejects_a_missing_target_column(tmp_path: Path) -> None:
    from openmaas.errors import ValidationFailed

    path = diabetes_csv(tmp_path / "diabetes.csv")
    with pytest.raises(ValidationFailed) as info:
        train("tabular-regression", path, {"target": "nope"})
    assert info.value.param == "target"
